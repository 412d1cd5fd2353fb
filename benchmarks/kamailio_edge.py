"""Benchmark: SIPp callers -> the full edge cfg (kamailio-conf/kamailio.cfg) -> SIPp workers, on loopback.

Steps the call rate up; for each step it records the callers' successful and failed calls, Kamailio's
CPU time (utime+stime of every Kamailio process, from /proc) and its shared-memory high-water mark.
The result: the highest rate with zero failed calls and Kamailio's CPU per 1,000 calls/s.

    .venv/bin/python benchmarks/kamailio_edge.py                  # 500..4000 calls/s, 10 s each
    .venv/bin/python benchmarks/kamailio_edge.py --rates 1000,2000 --seconds 8 --write docs/bench/kamailio.md

SIPp runs on the same two cores as Kamailio, so the break point is the machine's, not Kamailio's alone;
Kamailio's CPU is measured per process and is the figure to compare.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kamailio"))

from kamailio_harness import WORKER_IPS, KamailioEdge, SippUas, Worker, sipp_uac, stop_all  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def kamailio_pids(main_pid: int) -> list[int]:
    pids = [main_pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == main_pid:  # ppid: Kamailio forks all its workers from the main process
            pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def run(rates: list[int], seconds: float, hold_ms: int, workers: int, shm_mb: int, children: int = 4,
        allocator: str | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kamailio-bench-"))
    stands = [SippUas(work, f"worker{i + 1}", WORKER_IPS[i]).start() for i in range(workers)]
    dests = [Worker(f"fs{i + 1}", u.host, u.port) for i, u in enumerate(stands)]
    defines = {"UDP_CHILDREN": children, "DS_PING_INTERVAL": 5}
    edge = KamailioEdge(work / "edge", workers=dests, defines=defines, shm_mb=shm_mb, log_level=1,
                        extra_args=("-x", allocator) if allocator else ())
    edge.start()
    steps = []
    try:
        pids = kamailio_pids(edge.proc.pid)  # type: ignore[union-attr]
        idle_s = 5.0
        cpu0 = cpu_seconds(pids)
        time.sleep(idle_s)
        idle_cores = round((cpu_seconds(pids) - cpu0) / idle_s, 4)
        for rate in rates:
            calls = int(rate * seconds)
            cpu0, t0 = cpu_seconds(pids), time.monotonic()
            stats = sipp_uac(work, f"caller-{rate}", edge.sip_target, calls=calls, rate=rate, hold_ms=hold_ms,
                             timeout_s=int(seconds * 4 + 30),
                             extra=["-l", str(max(rate * (hold_ms + 1000) // 1000 * 2, 1000)),
                                    "-pause_msg_ign"])
            wall = time.monotonic() - t0
            cpu = cpu_seconds(pids) - cpu0
            shm = edge.rpc("core.shmmem")
            # The CPU covers the whole run (ramp-down included), so divide by the time calls were sent.
            cores = cpu / max(wall, seconds)
            step = {
                "rate": rate, "calls": calls, "successful": stats.successful, "failed": stats.failed,
                "sipp_rc": stats.returncode, "retransmissions": stats.retransmissions,
                "wall_s": round(wall, 2), "kamailio_cpu_s": round(cpu, 2),
                "kamailio_cores": round(cores, 3),
                "cores_per_1000_cps": round(cpu / calls * 1000, 3) if calls else None,
                "shm_max_used_mb": round(int(shm.get("max_used", 0)) / 2**20, 1),
            }
            steps.append(step)
            print(json.dumps(step), flush=True)
            if stats.failed or stats.successful != calls:
                break
            time.sleep(6)  # let tm's wait timers drain so each step starts clean
    finally:
        edge.stop()
        stop_all(stands)
    clean = [s for s in steps if s["failed"] == 0 and s["successful"] == s["calls"]]
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds_per_step": seconds, "hold_ms": hold_ms, "workers": workers, "shm_mb": shm_mb,
        "udp_children": children, "allocator": allocator or "qm (default)",
        "steps": steps, "idle_s": idle_s, "idle_cores": idle_cores,
        "max_clean_rate": max((s["rate"] for s in clean), default=0),
        "kamailio_version": os.popen("kamailio -v | head -1").read().strip(),
        "workdir": str(work),
    }


def markdown(result: dict, command: str) -> str:
    rows = "\n".join(
        f"| {s['rate']:,} | {s['calls']:,} | {s['successful']:,} | {s['failed']:,} "
        f"| {s['retransmissions']:,} | {s['kamailio_cpu_s']} "
        f"| {s['kamailio_cores']} | {s['cores_per_1000_cps']} | {s['shm_max_used_mb']} |"
        for s in result["steps"])
    clean = [s for s in result["steps"] if s["failed"] == 0 and s["successful"] == s["calls"]]
    per_k = ", ".join(f"{s['cores_per_1000_cps']} at {s['rate']:,}" for s in reversed(clean))
    return f"""# Kamailio edge benchmark

- Date: {result['date']}; {result['kamailio_version']}; SIPp 3.6.1; 2 vCPU shared by Kamailio and every SIPp
  (callers and {result['workers']} worker stand-ins) and by the other helpers' work on this machine.
- Command: `{command}`
- Path: SIPp caller (127.0.0.1, carrier trunk in address.list) -> `kamailio-conf/kamailio.cfg` as shipped
  (REQINIT sanity/pike/UA checks, permissions ACL, record-route, tm stateful relay, dispatcher round-robin
  with OPTIONS probing, failure route armed) -> SIPp `uas-worker-echo.xml` workers; INVITE/100/180/200/ACK,
  {result['hold_ms']} ms hold, BYE/200. {result['seconds_per_step']:g} s per step,
  Kamailio `-m {result['shm_mb']} -M 16`, memory manager {result['allocator']}, {result['udp_children']} UDP
  children, log level 1 (no per-call log lines).
- Idle Kamailio (probes, timers) used {result['idle_cores']} core over {result['idle_s']:g} s before the
  first step.
- The callers run with `-pause_msg_ign`: when the saturated machine delays an ACK past T1 the worker
  stand-in retransmits its 200, which SIPp would otherwise count as an "unexpected message" failure
  during the hold although the call completes (SIPp's `-pause_msg_ign`, https://sipp.sourceforge.net/doc/reference.html);
  retransmissions are listed.

| calls/s | calls | OK | failed | retrans. | Kamailio CPU s | cores | cores/1,000 calls/s | shm max MB |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

**Highest rate with zero failed calls: {result['max_clean_rate']:,} calls/s.**
**Kamailio CPU per 1,000 calls/s (core, at calls/s; target < 0.25): {per_k}.**

"cores per 1,000 calls/s" = Kamailio CPU seconds / calls x 1,000 (CPU per call, independent of wall time);
"cores" = CPU seconds / wall time of the step. Shared memory grows with the rate (transactions live ~5 s
after completion): size `-m` from the "shm max used" column plus margin (docs/kamailio.md).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="500,1000,2000,3000,4000", help="comma-separated calls/s steps")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of calls per step")
    ap.add_argument("--hold-ms", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--shm-mb", type=int, default=1536)
    ap.add_argument("--children", type=int, default=4, help="kamailio.cfg UDP_CHILDREN")
    ap.add_argument("--allocator", choices=("qm", "fm", "tlsf"), help="kamailio -x (default: qm)")
    ap.add_argument("--write", type=Path, help="write the Markdown report here (e.g. docs/bench/kamailio.md)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")]
    result = run(rates, args.seconds, args.hold_ms, args.workers, args.shm_mb, args.children, args.allocator)
    given = argv if argv is not None else sys.argv[1:]
    command = ".venv/bin/python benchmarks/kamailio_edge.py " + " ".join(given)
    report = markdown(result, command.strip())
    print(report)
    if args.write:
        args.write.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["max_clean_rate"] else 1


if __name__ == "__main__":
    sys.exit(main())
