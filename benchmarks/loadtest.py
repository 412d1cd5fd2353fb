"""Load-test figures for this machine, produced by the load-test tools themselves.

    .venv/bin/python benchmarks/loadtest.py [--out DIR] [--parts sip-direct,sip-edge,media-null,media-engine]

- sip-direct: `loadtest sip --find-capacity` with uac-speech-expect-200 (INVITE, rtp_stream of a
  spoken question, 1 s hold, BYE) straight at a SIPp worker stand-in (uas-worker-echo, -rtp_echo).
- sip-edge: the same through the repository's Kamailio edge (kamailio-conf/kamailio.cfg, started by
  tests/kamailio/kamailio_harness.py) in front of two worker stand-ins; Kamailio's CPU from /proc.
- media-null: `loadtest media` against `gateway serve --model-backend null-echo` at rising concurrency.
- media-engine: `loadtest media` against `gateway serve` + the embedded engine (`gateway model`).

Everything runs on 127.0.0.0/8 and is bounded (each capacity step 5 s, at most ~4 minutes in all).
Every part leaves its run directory (report.md, report.json, PNG charts) under --out and the script
prints a Markdown summary (also written to <out>/summary.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtest import scenario_path  # noqa: E402
from loadtest.media import MediaLoad, run_media  # noqa: E402
from loadtest.ports import free_udp_port  # noqa: E402
from loadtest.profile import Profile  # noqa: E402
from loadtest.report import write_reports  # noqa: E402
from loadtest.sip_load import run_sip  # noqa: E402


def tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_uas(workdir: Path, scenario: str, host: str = "127.0.0.1") -> tuple[subprocess.Popen, int]:
    port = free_udp_port(host)
    mport = free_udp_port(host, span=2, step=2, even=True)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["sipp", "-sf", str(scenario_path(scenario)), "-i", host, "-p", str(port),
                             "-mp", str(mport), "-rtp_echo", "-aa", "-nostdin", "-timeout", "600s",
                             "-max_socket", "4096"], cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def capacity_line(name: str, result) -> str:
    cap = result.capacity
    rows = [f"#### {name}", "", result.verdict, "",
            "| rate (calls/s) | attempted | ok | failed | achieved/s | peak concurrent "
            "| setup p50/p95/p99 ms | retrans | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for s in result.steps:
        lat = s.setup_ms
        verdict = "pass" if s.passed else "FAIL: " + "; ".join(c.detail for c in s.checks if not c.passed)
        rows.append(f"| {s.target_rate:g} | {s.attempted} | {s.successful} | {s.failed} | "
                    f"{(s.achieved_rate or 0):.1f} | {s.peak_concurrent} | {lat.p50} / {lat.p95} / {lat.p99} "
                    f"| {s.retransmissions} | {verdict} |")
    for proc, res in result.resources.items():
        if isinstance(res, dict):
            rows.append(f"\n{proc}: {res['cpu_seconds']} CPU-s over {res['wall_seconds']} s "
                        f"({res['cpu_ms_per_call']} ms per call), peak RSS {res['rss_mb_peak']} MB")
    if cap:
        rows.append(f"\nhighest passing rate {cap.highest_passing_rate}, "
                    f"concurrent {cap.concurrent_at_highest}")
    return "\n".join(rows) + "\n"


def sip_direct(out: Path, max_rate: float) -> str:
    uas, port = start_uas(out / "uas", "uas-worker-echo")
    try:
        profile = Profile(target=f"127.0.0.1:{port}", hold_ms=1000, duration_s=5, step_duration_s=5)
        result = asyncio.run(run_sip(profile, out / "sip-direct", find_capacity=True, start_rate=50,
                                     factor=2, max_rate=max_rate, refine=1, watch={"sipp-worker": uas.pid}))
        write_reports(result, out / "sip-direct")
        return capacity_line("SIP direct: SIPp caller -> SIPp worker stand-in", result)
    finally:
        stop(uas)


def sip_edge(out: Path, max_rate: float) -> str:
    sys.path.insert(0, str(REPO / "tests" / "kamailio"))
    from kamailio_harness import KamailioEdge, Worker

    w1, p1 = start_uas(out / "uas1", "uas-worker-echo", "127.0.0.11")
    w2, p2 = start_uas(out / "uas2", "uas-worker-echo", "127.0.0.12")
    workers = [Worker("fs1", "127.0.0.11", p1), Worker("fs2", "127.0.0.12", p2)]
    edge = KamailioEdge(out / "edge", workers=workers, shm_mb=1024, log_level=-1)
    edge.start()
    try:
        profile = Profile(target=edge.sip_target, hold_ms=1000, duration_s=5, step_duration_s=5)
        result = asyncio.run(run_sip(profile, out / "sip-edge", find_capacity=True, start_rate=50,
                                     factor=2, max_rate=max_rate, refine=1,
                                     watch={"kamailio": edge.proc.pid}))
        write_reports(result, out / "sip-edge")
        return capacity_line("SIP through the Kamailio edge (2 worker stand-ins, dispatcher alg 4)", result)
    finally:
        edge.stop()
        stop(w1)
        stop(w2)


def media_line(label: str, result) -> str:
    s = result.steps[0]
    gw = result.resources.get("gateway", {})
    eng = result.resources.get("engine", {})
    gen = result.resources.get("loadtest", {})
    fl, jit, rep = s.frame_latency_ms, s.jitter_ms, s.setup_ms
    call_seconds = s.extra.get("frames_sent", 0) * 0.02   # seconds of caller audio streamed, all calls
    # CPU per call: gateway CPU-seconds per second of call = share of one core one call costs
    cpu_per_call_s = (gw.get("cpu_seconds", 0) / call_seconds) if call_seconds else None
    def pair(a: float | None, b: float | None) -> str:
        return "- / -" if a is None or b is None else f"{a:.1f} / {b:.1f}"

    parts = [f"| {label} | {s.attempted} | {s.successful} | {s.failed} | {s.peak_concurrent} ",
             f"| {pair(fl.p50, fl.p99) if fl else '- / -'} ",
             f"| {pair(jit.p50, jit.p95) if jit else '- / -'} ",
             f"| {rep.p50:.0f} / {rep.p95:.0f} " if rep.count else "| - ",
             (f"| {gw.get('cpu_seconds', '-')} | {cpu_per_call_s * 100:.2f} % " if cpu_per_call_s
              else "| - | - "),
             f"| {gw.get('cpu_percent_max', '-')} | {gw.get('rss_mb_peak', '-')} ",
             f"| {eng.get('cpu_seconds', '-')} | {gen.get('cpu_percent_mean', '-')} |"]
    return "".join(parts)


MEDIA_HEAD = ("| run | calls | ok | failed | peak concurrent | frame echo latency p50 / p99 ms "
              "| playout jitter p50 / p95 ms | end of speech -> first audio p50 / p95 ms "
              "| gateway CPU-s | gateway CPU per call (% of a core) | gateway CPU % max | gateway RSS MB "
              "| engine CPU-s | generator CPU % mean |\n" + "|---" * 14 + "|")


def start_gateway(out: Path, *args: str) -> tuple[subprocess.Popen, int, str]:
    port, admin = tcp_port(), tcp_port()
    log = (out / f"gateway-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--media-host", "127.0.0.1",
                             "--media-port", str(port), "--admin-host", "127.0.0.1", "--admin-port",
                             str(admin), *args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    wait_port(port)
    return proc, port, f"http://127.0.0.1:{admin}/readyz"


def media_null(out: Path, levels: list[int]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["#### Media plane, gateway with the null-echo model", "", MEDIA_HEAD]
    for n in levels:
        gw, port, ready = start_gateway(out, "--model-backend", "null-echo")
        try:
            load = MediaLoad(url=f"ws://127.0.0.1:{port}", ready_url=ready, model="null-echo", calls=n,
                             concurrency=n,
                             rate=min(50.0, n / 2), max_failed_ratio=0.0)
            result = asyncio.run(run_media(load, out / f"media-null-{n}"))
            write_reports(result, out / f"media-null-{n}")
            lines.append(media_line(f"{n} concurrent", result))
        finally:
            stop(gw)
    return "\n".join(lines) + "\n"


def media_engine(out: Path, levels: list[int]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["#### Media plane, gateway + embedded engine (`gateway model`)", "", MEDIA_HEAD]
    for n in levels:
        eport = tcp_port()
        elog = (out / f"engine-{eport}.log").open("wb")
        engine = subprocess.Popen([sys.executable, "-m", "gateway", "model", "--host", "127.0.0.1",
                                   "--port", str(eport)], stdout=elog, stderr=subprocess.STDOUT, cwd=REPO)
        elog.close()
        wait_port(eport)
        gw, port, ready = start_gateway(out, "--model-url", f"ws://127.0.0.1:{eport}/v1")
        try:
            load = MediaLoad(url=f"ws://127.0.0.1:{port}", ready_url=ready, calls=n, concurrency=n,
                             rate=min(10.0, n / 2),
                             question="What are your opening hours?", engine_pid=engine.pid,
                             max_failed_ratio=0.0)
            result = asyncio.run(run_media(load, out / f"media-engine-{n}"))
            write_reports(result, out / f"media-engine-{n}")
            lines.append(media_line(f"{n} concurrent", result))
        finally:
            stop(gw)
            stop(engine)
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/loadtest-bench")
    p.add_argument("--parts", default="sip-direct,sip-edge,media-null,media-engine")
    p.add_argument("--max-rate", type=float, default=1600)
    p.add_argument("--media-levels", default="25,50,100")
    p.add_argument("--engine-levels", default="4,8")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    sections = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {socket.gethostname()}\n"]
    started = time.monotonic()
    if "sip-direct" in parts:
        sections.append(sip_direct(out, args.max_rate))
    if "sip-edge" in parts:
        sections.append(sip_edge(out, args.max_rate))
    if "media-null" in parts:
        levels = [int(x) for x in args.media_levels.split(",")]
        sections.append(media_null(out / "media", levels))
    if "media-engine" in parts:
        levels = [int(x) for x in args.engine_levels.split(",")]
        sections.append(media_engine(out / "media", levels))
    sections.append(f"(benchmark wall time {time.monotonic() - started:.0f} s)")
    text = "\n".join(sections)
    (out / "summary.md").write_text(text)
    print(text)
    print(json.dumps({"out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
