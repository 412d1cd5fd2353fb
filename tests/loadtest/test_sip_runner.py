"""`loadtest sip` end to end: real sipp caller -> real sipp worker stand-in on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import yaml

from loadtest.cli import main

pytestmark = pytest.mark.slow
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sipp_screen_totals(screen: Path) -> dict[str, int]:
    """SIPp's own final statistics screen (-trace_screen), read independently of our parser."""
    text = screen.read_text(errors="replace")
    totals = {}
    for key, label in (("successful", "Successful call"), ("failed", "Failed call"),
                       ("outgoing", "Outgoing calls created")):
        values = re.findall(rf"^\s*{label}\s*\|\s*\d+\s*\|\s*(\d+)", text, re.M)
        assert values, f"no '{label}' line in {screen}"
        totals[key] = int(values[-1])
    return totals


def run_cli(*args: str) -> int:
    return main(["sip", "--quiet", *args])


def test_short_run_counts_match_sipps_own_statistics_and_report_renders(start_uas, tmp_path):
    uas = start_uas("uas-worker-echo")
    out = tmp_path / "run"
    code = run_cli("--target", uas.target, "--rate", "10", "--calls", "25", "--hold-ms", "300",
                   "--out", str(out))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    step_dir = next(out.glob("step-01-*"))
    sipp_says = sipp_screen_totals(step_dir / "screen.log")
    assert sipp_says == {"successful": 25, "failed": 0, "outgoing": 25}
    assert (step["attempted"], step["successful"], step["failed"]) == (25, 25, 0)
    assert step["exit_code"] == 0 and report["exit_code"] == 0 and report["passed"] is True
    assert step["setup_ms"]["count"] == 25            # one INVITE->200 sample per call from -trace_rtt
    assert report["verdict"].startswith("PASS")
    # the captured stat file is real sipp 3.6.1 output: 95 columns, TABs inside the dates
    header, first = (step_dir / "stat.csv").read_text().splitlines()[:2]
    assert len(header.rstrip(";").split(";")) == 95 and "\t" in first.split(";")[0]
    # reports: markdown with the verdict, four charts that decode as PNG images
    md = (out / "report.md").read_text()
    assert "**PASS" in md and "| 25 | 25 | 0 |" in md
    for name in ("calls_per_s", "concurrent", "failures", "response_time"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        image = mpimg.imread(png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # not a blank canvas


def test_every_call_rejected_with_503_fails_the_run(start_uas, tmp_path):
    uas = start_uas("uas-worker-503")
    out = tmp_path / "run"
    code = run_cli("--target", uas.target, "--rate", "10", "--calls", "10", "--out", str(out))
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert sipp_screen_totals(next(out.glob("step-01-*")) / "screen.log")["failed"] == 10
    assert (step["successful"], step["failed"], step["exit_code"]) == (0, 10, 1)
    assert step["failures"] == {"FailedUnexpectedMessage": 10}
    assert step["errors"] == {"unexpected SIP/2.0 503 Service Unavailable": 10}
    assert report["verdict"].startswith("FAIL") and "failed-call ratio" in report["verdict"]
    assert "**FAIL" in (out / "report.md").read_text()


def test_an_impossible_setup_time_threshold_fails_a_run_sipp_calls_clean(start_uas, tmp_path):
    uas = start_uas("uas-worker-echo")
    out = tmp_path / "run"
    code = run_cli("--target", uas.target, "--rate", "10", "--calls", "5", "--hold-ms", "100",
                   "--max-setup-p95-ms", "0.001", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["steps"][0]["exit_code"] == 0     # sipp itself saw 5 good calls
    assert code == 1 and report["passed"] is False
    assert "setup time p95" in report["verdict"]


def test_ramp_from_a_profile_file_runs_each_step(start_uas, tmp_path):
    uas = start_uas("uas-worker-echo")
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "target": uas.target, "rate_steps": [5, 10], "step_duration_s": 2, "hold_ms": 200,
        "thresholds": {"max_failed_ratio": 0.0, "max_setup_p99_ms": 900}}))
    out = tmp_path / "run"
    assert run_cli("--profile", str(profile), "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert [(s["target_rate"], s["requested"], s["attempted"], s["successful"]) for s in report["steps"]] == [
        (5, 10, 10, 10), (10, 20, 20, 20)]
    assert report["settings"]["thresholds"]["max_setup_p99_ms"] == 900
    # both steps on one time axis: the second starts after the first
    assert report["steps"][1]["started_at"] > report["steps"][0]["started_at"]


def test_find_capacity_stops_at_the_first_rate_that_breaks_and_judges_the_2x_rule(start_uas, tmp_path):
    # -l 2 with 1 s calls caps the worker path at about 2 calls/s: 1 cps passes, 4 cps cannot keep up
    uas = start_uas("uas-worker-echo")
    out = tmp_path / "run"
    code = run_cli("--target", uas.target, "--find-capacity", "--start-rate", "1", "--rate-factor", "4",
                   "--max-rate", "16", "--refine", "0", "--step-duration", "4", "--hold-ms", "1000",
                   "--max-concurrent", "2", "--peak-concurrent", "1", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    cap = report["capacity"]
    assert [s["target_rate"] for s in report["steps"]] == [1, 4]
    assert cap["highest_passing_rate"] == 1 and cap["first_failing_rate"] == 4
    assert any("achieved/target rate" in b for b in cap["broke_on"])
    assert cap["concurrent_at_highest"] >= 1
    assert cap["passes_2x_peak"] is (cap["concurrent_at_highest"] >= 2)
    assert code == (0 if cap["passes_2x_peak"] else 1)
    assert "Capacity" in (out / "report.md").read_text()


@pytest.mark.parametrize("args", [
    ["--target", "127.0.0.1:5060", "--rate", "10"],                       # no calls / duration: unbounded
    ["--target", "no-port", "--calls", "1"],
    ["--target", "127.0.0.1:5060", "--calls", "1", "--rate", "1000000"],  # over the rate cap
])
def test_unbounded_or_invalid_profiles_are_refused_with_exit_2(args, tmp_path, capsys):
    assert run_cli(*args, "--out", str(tmp_path / "x")) == 2
    assert "invalid profile" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unanswered_invites_are_counted_as_retransmission_timeouts(tmp_path):
    # nobody listens on the target: sipp retransmits each INVITE once, then gives the call up
    from loadtest.ports import free_udp_port

    out = tmp_path / "run"
    code = run_cli("--target", f"127.0.0.1:{free_udp_port()}", "--rate", "10", "--calls", "3",
                   "--sipp-arg=-max_invite_retrans", "--sipp-arg=1", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert code == 1
    assert sipp_screen_totals(next(out.glob("step-01-*")) / "screen.log")["failed"] == 3
    assert (step["attempted"], step["failed"], step["setup_ms"]["count"]) == (3, 3, 0)
    assert step["failures"] == {"FailedMaxUDPRetrans": 3}
    # SIPp writes these events back to back without newlines; each one is counted
    assert step["errors"] == {"Aborting call on UDP retransmission timeout for Call-ID '...'": 3}
    assert step["retransmissions"] == 3


def test_loadtest_worker_serves_as_the_target_of_a_run(tmp_path):
    import subprocess
    import sys
    import time

    from loadtest.ports import free_udp_port

    port = free_udp_port()
    worker = subprocess.Popen([sys.executable, "-m", "loadtest.cli", "worker",
                               "--listen", f"127.0.0.1:{port}", "--duration", "60"], cwd=tmp_path,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = tmp_path / "run"
        assert run_cli("--target", f"127.0.0.1:{port}", "--calls", "4", "--hold-ms", "100",
                       "--out", str(out)) == 0
        assert json.loads((out / "report.json").read_text())["steps"][0]["successful"] == 4
    finally:
        worker.terminate()
        worker.wait(timeout=10)


def test_the_shipped_example_profile_is_valid_and_bounded():
    from loadtest.profile import Profile, load_profile_file

    path = Path(__file__).resolve().parents[2] / "loadtest" / "profiles" / "edge-rollout.yaml"
    profile = Profile.model_validate(load_profile_file(path))
    assert profile.step_rates() == [5, 10, 20, 30]
    assert [profile.calls_for(r) for r in profile.step_rates()] == [600, 1200, 2400, 3600]
    # every step has a hard time bound: sending time + hold + grace
    assert profile.step_timeout_s(30) == 120 + 60 + profile.grace_s
