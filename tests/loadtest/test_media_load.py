"""`loadtest media` against a real `gateway serve` process (null-echo model, and the embedded engine)."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
from lt_helpers import free_tcp_port

from loadtest.cli import main

pytestmark = pytest.mark.slow


def test_two_dozen_concurrent_calls_against_the_null_echo_gateway(serve, tmp_path):
    admin = free_tcp_port()
    gw = serve("serve", "--media-host", "127.0.0.1", "--admin-host", "127.0.0.1",
               "--admin-port", str(admin), "--model-backend", "null-echo",
               port_flag="--media-port", name="gateway")
    out = tmp_path / "media"
    code = main(["media", "--url", f"ws://127.0.0.1:{gw.port}", "--ready-url", f"http://127.0.0.1:{admin}/readyz",
                 "--model", "null-echo", "--calls", "24",
                 "--concurrency", "12", "--rate", "8", "--quiet", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert code == 0, report["verdict"]
    assert (step["attempted"], step["successful"], step["failed"], step["unfinished"]) == (24, 24, 0, 0)
    assert step["peak_concurrent"] == 12
    # null-echo sends every caller frame back: most return before the hang-up (the rest are still in
    # the gateway's playout when the call ends), and each one that returns is timed
    assert step["extra"]["frames_received"] >= 0.8 * step["extra"]["frames_sent"]
    assert step["frame_latency_ms"]["count"] >= 0.9 * step["extra"]["frames_received"]
    assert step["jitter_ms"]["count"] > 0 and step["setup_ms"]["count"] == 24
    # the gateway's own CPU and memory, from /proc of the process we started
    gateway = report["resources"]["gateway"]
    assert gateway["pid"] == gw.proc.pid
    assert gateway["cpu_seconds"] > 0 and gateway["rss_mb_peak"] > 10
    for name in ("calls_per_s", "concurrent", "failures", "response_time", "resources"):
        assert mpimg.imread(out / f"{name}.png").shape[0] > 100
    assert "per-frame echo latency" in (out / "report.md").read_text()


def test_calls_against_the_embedded_engine_measure_end_of_speech_to_first_reply(serve, tmp_path):
    engine = serve("model", "--host", "127.0.0.1", port_flag="--port", name="engine")
    admin = free_tcp_port()
    gw = serve("serve", "--media-host", "127.0.0.1", "--admin-host", "127.0.0.1",
               "--admin-port", str(admin), "--model-url", f"ws://127.0.0.1:{engine.port}/v1",
               port_flag="--media-port", name="gateway")
    out = tmp_path / "media"
    code = main(["media", "--url", f"ws://127.0.0.1:{gw.port}", "--ready-url", f"http://127.0.0.1:{admin}/readyz",
                 "--calls", "3", "--concurrency", "3",
                 "--rate", "3", "--question", "What are your opening hours?",
                 "--engine-port", str(engine.port), "--quiet", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert code == 0, report["verdict"]
    assert (step["successful"], step["failed"]) == (3, 0)
    # a real spoken answer came back after the caller stopped talking
    assert step["setup_ms"]["count"] == 3 and step["setup_ms"]["p50"] > 0
    assert step["extra"]["reply_seconds_mean"] > 1.0
    assert "open" in step["extra"]["agent_answer_first_call"].lower()
    assert step["frame_latency_ms"] is None          # only meaningful with null-echo
    assert set(report["resources"]) == {"gateway", "engine", "loadtest"}
    assert report["resources"]["engine"]["pid"] == engine.proc.pid


def test_a_gateway_that_never_gets_ready_is_a_tool_failure(tmp_path):
    out = tmp_path / "media"
    code = main(["media", "--url", f"ws://127.0.0.1:{free_tcp_port()}", "--ready-url",
                 f"http://127.0.0.1:{free_tcp_port()}/readyz", "--model", "null-echo", "--calls", "2",
                 "--quiet", "--out", str(out), "--ready-timeout", "1"])
    assert code == 3
    assert "not ready" in json.loads((out / "report.json").read_text())["verdict"]


def test_an_unreachable_gateway_is_a_tool_failure_not_a_pass(tmp_path):
    out = tmp_path / "media"
    code = main(["media", "--url", f"ws://127.0.0.1:{free_tcp_port()}", "--model", "null-echo",
                 "--calls", "2", "--concurrency", "2", "--rate", "10", "--quiet", "--out", str(out)])
    assert code == 3
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"].startswith("FAIL: could not connect")
    assert report["steps"][0]["failed"] == 2


def test_calls_split_over_generator_processes_are_merged_on_one_time_axis(serve, tmp_path):
    admin = free_tcp_port()
    gw = serve("serve", "--media-host", "127.0.0.1", "--admin-host", "127.0.0.1",
               "--admin-port", str(admin), "--model-backend", "null-echo",
               port_flag="--media-port", name="gateway")
    out = tmp_path / "media"
    code = main(["media", "--url", f"ws://127.0.0.1:{gw.port}", "--ready-url", f"http://127.0.0.1:{admin}/readyz",
                 "--model", "null-echo", "--calls", "12", "--concurrency", "12", "--rate", "12",
                 "--processes", "2", "--quiet", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert code == 0, report["verdict"]
    assert (step["attempted"], step["successful"]) == (12, 12)
    # both processes' calls overlap in time: all 12 were up together at some second
    assert step["peak_concurrent"] == 12
    assert step["frame_latency_ms"]["count"] > 0
