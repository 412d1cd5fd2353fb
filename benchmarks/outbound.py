"""Outbound-call benchmark: the time from `POST /calls` to the INVITE at the carrier, and how many calls a
second one gateway + one FreeSWITCH worker originate through the Kamailio edge.

    .venv/bin/python benchmarks/outbound.py --latency-calls 20 --burst 100 --cps 1000

The real path of tests/harness.callpath on 127.0.5.100-.120: `gateway serve` -> ESL `bgapi originate` ->
FreeSWITCH (freeswitch-conf/) -> Kamailio edge (kamailio-conf/) -> a SIPp carrier that answers every
INVITE with 180 and rings until cancelled (tests/outbound/callees.py). INVITE arrival times are SIPp's own
message-log timestamps (wall clock, same host).

latency: one call at a time: wall time before the POST -> the INVITE's arrival at the carrier; the call is
then hung up through the API and the next starts once it is over. p50 / p95 / max.
burst: --burst calls POSTed as fast as the API takes them, with the trunk CPS limit at --cps and a cap
above the burst: INVITEs per second at the carrier (first to last arrival) and the POST rate. FreeSWITCH's
own `sessions_per_second` (freeswitch-conf/vars.xml, 100 by default) is a limit of its own; it is raised
to --fs-sps here so the figure is the gateway's + FreeSWITCH's originate cost, not a configured cap.

Every loop is bounded in count and time; everything started is stopped at the end. The machine is shared:
the 1-minute load average is printed next to every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "outbound"))
sys.path.insert(0, str(ROOT / "tests" / "packaging"))

import httpx  # noqa: E402
from callees import invites, ringing_forever, swap_callee  # noqa: E402
from fsmod_support import have_freeswitch, patched_module_so  # noqa: E402
from harness.callpath import Addresses, CallPath  # noqa: E402
from harness.freeswitch import FreeSwitch  # noqa: E402

IPS = [f"127.0.5.{i}" for i in range(100, 121)]
SECRET = "outbound-bench-operator-secret"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def start_path(workdir: Path, args: argparse.Namespace) -> CallPath:
    made: list[FreeSwitch] = []

    def factory(host: str, *, start: bool = True, **kwargs: object) -> FreeSwitch:
        fs = FreeSwitch(workdir / f"fs-{host}", host, **kwargs)  # type: ignore[arg-type]
        made.append(fs)
        if start:
            fs.start()
        return fs

    env = {"GATEWAY_ADMIN_TOKENS": f"bench:control:{SECRET}", "GATEWAY_OUTBOUND_CALLER_IDS": "+15550001000",
           "GATEWAY_OUTBOUND_CPS": str(args.cps), "GATEWAY_OUTBOUND_MAX_CONCURRENT": str(args.burst + 10),
           "GATEWAY_LOG_LEVEL": "WARNING"}
    so = patched_module_so() if have_freeswitch() else None
    path = CallPath(workdir / "path", Addresses.block(IPS, 1), factory, edition="voxcom",
                    audio_stream_so=so, gateway_env=env,
                    fs_vars={"sessions_per_second": str(args.fs_sps), "log_level": "warning"})
    return path.start()


_client: httpx.Client | None = None


def api(path: CallPath) -> httpx.Client:
    """One keep-alive client: a new httpx client per request costs ~100 ms of its own (TLS context set-up),
    which would be measured as the gateway's."""
    global _client
    if _client is None:
        _client = httpx.Client(base_url=path.gateway.admin_url, headers=AUTH, timeout=10)
    return _client


def post(path: CallPath, to: str) -> str:
    r = api(path).post("/calls", json={"to": to, "ring_timeout_s": 60})
    r.raise_for_status()
    return str(r.json()["id"])


def state(path: CallPath, call_id: str) -> str:
    return str(api(path).get(f"/calls/{call_id}").json()["state"])


def hangup(path: CallPath, call_id: str) -> None:
    api(path).post(f"/calls/{call_id}/hangup")


def wait_invites(callee, n: int, timeout: float) -> list[tuple[float, str]]:
    deadline = time.monotonic() + timeout
    got = invites(callee)
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.005)
        got = invites(callee)
    return got


def latency(path: CallPath, n: int) -> None:
    callee = swap_callee(path, ringing_forever(), calls=n)
    results = []
    for i in range(n):
        t0 = time.time()
        call_id = post(path, f"+1555070{i:04d}")
        got = wait_invites(callee, i + 1, 10)
        if len(got) <= i:
            print(f"call {i}: no INVITE within 10 s", file=sys.stderr)
            break
        results.append((got[i][0] - t0) * 1000)
        hangup(path, call_id)
        deadline = time.monotonic() + 10
        while state(path, call_id) not in ("canceled", "no_answer", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
    print(f"API call -> INVITE at the carrier, {len(results)} calls one at a time: "
          f"p50 {statistics.median(results):.1f} ms, p95 {pct(results, 0.95):.1f} ms, "
          f"max {max(results):.1f} ms "
          f"(load {loadavg()})")


def burst(path: CallPath, n: int, cps: float) -> None:
    callee = swap_callee(path, ringing_forever(), calls=n)
    t0 = time.time()
    ids = [post(path, f"+1555080{i:04d}") for i in range(n)]
    posted = time.time() - t0
    got = wait_invites(callee, n, 20)
    if got:
        span = got[-1][0] - got[0][0]
        rate = (len(got) - 1) / span if span > 0 else float("inf")
        print(f"burst of {n} (CPS limit {cps:g}): {len(got)} INVITEs at the carrier in {span:.2f} s = "
              f"{rate:.1f} calls/s; POSTs took {posted:.2f} s ({n / posted:.0f}/s); first INVITE "
              f"{(got[0][0] - t0) * 1000:.0f} ms, last {(got[-1][0] - t0) * 1000:.0f} ms after the "
              f"first POST "
              f"(load {loadavg()})")
    infos = [api(path).get(f"/calls/{call_id}").json() for call_id in ids]
    states = Counter((i["state"], i["hangup_cause"], i["sip_status"]) for i in infos)
    print(f"  (state, hangup cause, SIP status) after the burst: {dict(states)}")
    for call_id in ids:
        hangup(path, call_id)
    deadline = time.monotonic() + 30
    while path.fs.channels() and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-calls", type=int, default=20)
    p.add_argument("--burst", type=int, default=180,
                   help="at most ~190: the test FreeSWITCH has 400 RTP ports (two per call)")
    p.add_argument("--cps", type=float, default=1000.0, help="the trunk CPS limit during the burst")
    p.add_argument("--fs-sps", type=int, default=1000, help="FreeSWITCH sessions_per_second")
    args = p.parse_args()
    if not have_freeswitch():
        sys.exit("no FreeSWITCH build (../shared/freeswitch/install.sh beside the checkout)")
    with tempfile.TemporaryDirectory(prefix="outbound-bench-") as tmp:
        path = start_path(Path(tmp), args)
        try:
            if args.latency_calls:
                latency(path, args.latency_calls)
            if args.burst:
                burst(path, args.burst, args.cps)
        finally:
            path.stop()


if __name__ == "__main__":
    main()
