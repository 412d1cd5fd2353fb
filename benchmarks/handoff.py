"""Warm transfer benchmark: time from the AI's "escalate" to the human hearing the briefing, on the real
FreeSWITCH, p50/p95 over --calls calls.

    .venv/bin/python benchmarks/handoff.py --calls 10

The whole path of tests/harness.callpath: SIPp carrier -> Kamailio edge (kamailio-conf/) -> FreeSWITCH
(freeswitch-conf/, the patched mod_audio_stream) -> `gateway serve` -> `gateway model` (the embedded
engine), and the human dialled back out through the edge: a SIPp UAS that answers at once (no ringing,
so the figure is the appliance's own time). Each call: the greeting plays, the caller says "I want to talk
to a human", the engine calls `escalate`, the gateway builds the handoff (extractive summary), originates
the human's leg, which on answer is streamed to the gateway and hears the briefing spoken by the engine.

Measured per call, all on this machine's wall clock:
  escalate -> briefing heard   the handoff's `escalated_at` (GET /handoffs/{id}) to the first speech RTP
                               frame the human receives (kernel receive time)
  escalate -> human answered   the attempt's `briefing_ms` (the gateway saw CHANNEL_ANSWER)
  answered -> briefing heard   the difference: stream start, briefing session, TTS, first RTP

The machine is shared: the 1-minute load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "packaging"))
sys.path.insert(0, str(ROOT / "tests" / "handoff"))

import httpx  # noqa: E402
import yaml  # noqa: E402
from fsmod_support import have_freeswitch, patched_module_so  # noqa: E402
from handoff_sipp import human_factory  # noqa: E402
from harness import sipp  # noqa: E402
from harness.callpath import Addresses, CallPath  # noqa: E402
from harness.freeswitch import FreeSwitch  # noqa: E402
from harness.procs import GatewayModel  # noqa: E402
from harness.rtp import speech_pcmu  # noqa: E402

YES = speech_pcmu("Yes, please.")

# This benchmark's addresses (the handoff area's block, apart from its tests' 127.0.4.21-39).
IPS = [f"127.0.4.{i}" for i in range(40, 60)]
MODEL_IP = "127.0.4.60"
HANDOFF = {"mode": "warm", "targets": [{"target": "reception", "timeout_s": 15}], "accept_timeout_s": 10}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def profiles(workdir: Path) -> Path:
    from gateway.settings import DEFAULT_PROFILES_DIR

    out = workdir / "profiles"
    out.mkdir(parents=True)
    for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
        doc = yaml.safe_load(src.read_text())
        if doc.get("name") == "front-desk":
            doc["handoff"] = HANDOFF
        (out / src.name).write_text(yaml.safe_dump(doc))
    return out


def one_call(path: CallPath, human_phrase: bytes) -> dict[str, float] | None:
    offset = time.time() - time.monotonic()
    call = path.call(wait_bye_s=60)
    try:
        if not call.wait_answered(15):
            return None
        if call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0) is None:
            return None
        before = len(path.human.received("INVITE"))
        # The embedded engine asks before it hands the call on (issue 18); the caller says yes.
        if call.ask_and_confirm(human_phrase, YES) is None:
            return None
        deadline = time.monotonic() + 30
        invite = None
        while invite is None and time.monotonic() < deadline:
            found = path.human.received("INVITE")
            invite = found[-1] if len(found) > before else None
            time.sleep(0.02)
        if invite is None:
            return None
        media = sipp.sdp_media(invite.body)
        if media:
            path.human_rtp.set_remote(*media)
        since = time.monotonic() - 1.0
        heard = None
        while heard is None and time.monotonic() < deadline + 15:
            heard = path.human_rtp.first_speech_after(since)
            time.sleep(0.02)
        if heard is None:
            return None
        path.human_rtp.send_dtmf_pcap("2")  # decline: the human's leg ends, the caller stays with the AI
        handoff_id = invite.header("X-AI-Handoff-Id") or ""
        doc: dict = {}
        for _ in range(50):  # the attempt (with its answer time) is recorded once the human decided
            doc = httpx.get(f"{path.gateway.admin_url}/handoffs/{handoff_id}", timeout=5).json()
            if doc.get("attempts"):
                break
            time.sleep(0.1)
        total = ((heard + offset) - doc["escalated_at"]) * 1000.0
        answered = doc["attempts"][0]["briefing_ms"] if doc.get("attempts") else None
        return {"total_ms": total, "answered_ms": answered or float("nan"),
                "answer_to_heard_ms": total - answered if answered else float("nan")}
    finally:
        time.sleep(1.0)
        call.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=10)
    args = p.parse_args()
    if not have_freeswitch():
        print("no FreeSWITCH build (../shared/freeswitch/install.sh beside the checkout)", file=sys.stderr)
        return 2
    module = patched_module_so()
    workdir = Path(tempfile.mkdtemp(prefix="bench-handoff-"))
    made: list[FreeSwitch] = []

    def fs_factory(host: str, *, start: bool = True, **kwargs: object) -> FreeSwitch:
        fs = FreeSwitch(workdir / f"fs-{host}-{len(made)}", host, **kwargs)  # type: ignore[arg-type]
        made.append(fs)
        if start:
            fs.start()
        return fs

    model = GatewayModel(workdir / "model", MODEL_IP).start()
    path = CallPath(workdir / "path", Addresses.block(IPS), fs_factory, edition="voxcom", model=model,
                    audio_stream_so=module, gateway_env={"GATEWAY_PROFILES_DIR": str(profiles(workdir))},
                    human_factory=human_factory(ring_ms=0, calls=args.calls + 5))
    results: list[dict[str, float]] = []
    try:
        path.start()
        phrase = speech_pcmu("I want to talk to a human.")
        for n in range(args.calls):
            r = one_call(path, phrase)
            print(f"call {n + 1}: {r}", flush=True)
            if r is not None:
                results.append(r)
    finally:
        path.stop()
        model.stop(timeout=5)
    if not results:
        print("no call measured")
        return 1
    load = os.getloadavg()[0]
    print(f"\n{len(results)} calls, load average {load:.1f}")
    for key, what in (("total_ms", "escalate -> human hears the briefing"),
                      ("answered_ms", "escalate -> human answered"),
                      ("answer_to_heard_ms", "answered -> briefing heard")):
        values = [r[key] for r in results if r[key] == r[key]]  # NaN: not recorded
        if values:
            print(f"{what}: p50 {pct(values, 0.5):.0f} ms, p95 {pct(values, 0.95):.0f} ms, "
                  f"min {min(values):.0f}, max {max(values):.0f}, mean {statistics.mean(values):.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
