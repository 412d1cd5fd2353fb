"""Hold audio on a SIP warm transfer, on the real FreeSWITCH: the profile's `handoff.hold_audio` (here a
steady 1400 Hz tone_stream) is what the caller hears while the human is dialled and briefed: the tone
is in the caller's RTP, the briefing is not, and the tone stops once the caller is introduced and
bridged. While on hold the caller's AI is on hold too: a question asked then gets no answer over the
hold audio, and the AI answers again once it has taken the caller back. Runs on this area's own
addresses (127.0.7.21-39), beside the other handoff tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness.rtp import ulaw_decode  # noqa: E402
from speech import HUMAN, OPENING_HOURS, YES, phrase  # noqa: E402

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

IPS = [f"127.0.7.{i}" for i in range(21, 39)]
TONE_HZ = 1400.0
HOLD = f"tone_stream://%(1000,0,{TONE_HZ:g});loops=-1"


@pytest.fixture
def hold_path(tmp_path: Path, freeswitch_factory, request: pytest.FixtureRequest, handoff_model,
              handoff_module):
    from handoff_sipp import human_factory
    from harness.callpath import Addresses, CallPath

    from gateway.settings import DEFAULT_PROFILES_DIR

    made: list[Any] = []

    def make(handoff: dict[str, Any], human: dict[str, Any]):
        profiles = tmp_path / "profiles"
        profiles.mkdir()
        for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
            doc = yaml.safe_load(src.read_text())
            if doc.get("name") == "front-desk":
                doc["handoff"] = handoff
            (profiles / src.name).write_text(yaml.safe_dump(doc))
        kwargs: dict[str, Any] = {}
        if handoff_module is not None:
            kwargs["audio_stream_so"] = handoff_module
        path = CallPath(tmp_path / "path", Addresses.block(IPS), freeswitch_factory, edition="voxcom",
                        model=handoff_model, gateway_env={"GATEWAY_PROFILES_DIR": str(profiles)},
                        human_factory=human_factory(**human), **kwargs)
        made.append(path)
        return path.start()

    yield make
    rep = getattr(request.node, "rep_call", None)
    for p in made:
        if rep is None or rep.failed:
            print(f"\n===== call path logs ({p.workdir}) =====\n{p.logs()}")
        p.stop()


def _kind(payload: bytes, hz: float) -> str | None:
    """'tone' when nearly all of a 20 ms mu-law frame's energy is within 60 Hz of `hz`, 'other' for any
    other audible sound, None for silence."""
    pcm = ulaw_decode(payload).astype(np.float64)
    if len(pcm) < 160:
        return None
    power = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    total = float(power.sum())
    if total < 1e5 * len(pcm):  # about -45 dBFS: silence
        return None
    near = float(power[np.abs(freqs - hz) <= 60].sum())
    return "tone" if near / total > 0.8 else "other"


def tone_frames(packets: list[Any], hz: float = TONE_HZ) -> tuple[int, int, int]:
    """(frames, frames that are the tone, frames with other sound) of 20 ms mu-law packets."""
    kinds = [_kind(p.payload, hz) for p in packets]
    return len(packets), kinds.count("tone"), kinds.count("other")


def first_other_sound(call: Any, since: float, timeout: float) -> float | None:
    """When the caller first heard something other than the hold tone after `since` (e.g. the AI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in call.rtp.audio_packets(since=since):
            if _kind(p.payload, TONE_HZ) == "other":
                return float(p.t)
        time.sleep(0.1)
    return None


def test_caller_hears_the_hold_audio_not_the_briefing_until_bridged(hold_path):
    handoff = {"mode": "warm", "max_hops": 2, "accept_timeout_s": 20, "hold_audio": HOLD,
               "targets": [{"target": "billing", "timeout_s": 15}]}
    path = hold_path(handoff, human={"ring_ms": 3000})
    call = path.call(wait_bye_s=120)
    assert call.wait_answered(15)
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0) is not None, \
        "the caller heard no greeting"
    assert call.ask_and_confirm(phrase(HUMAN), phrase(YES)) is not None, "the agent did not ask first"
    said = call.wait_said()

    invite = None
    deadline = time.monotonic() + 30
    while invite is None and time.monotonic() < deadline:
        found = path.human.received("INVITE")
        invite = found[0] if found else None
        time.sleep(0.05)
    assert invite is not None, "the human was never dialled"
    from harness import sipp

    dialled_at = time.monotonic()
    media = sipp.sdp_media(invite.body)
    assert media is not None, invite.text
    path.human_rtp.set_remote(*media)
    # The human answers after 3 s of ringing and hears the briefing.
    briefing = None
    deadline = time.monotonic() + 30
    while briefing is None and time.monotonic() < deadline:
        segs = path.human_rtp.speech_segments(since=dialled_at, bridge_s=0.6)
        if segs and segs[-1].end - segs[0].start >= 2.0 and time.monotonic() - segs[-1].end >= 1.0:
            briefing = (segs[0].start, segs[-1].end)
        time.sleep(0.05)
    assert briefing is not None, "the human heard no briefing"

    # While the human rang and was briefed the caller heard the hold tone, and nothing else.
    n, tone, other = tone_frames(call.rtp.audio_packets(since=dialled_at + 0.5, until=briefing[1]))
    print(f"\ncaller while held: {n} frames, {tone} tone, {other} other sound "
          f"(the human dialled {dialled_at - said:.2f} s after the caller's yes)")
    assert n > 100 and tone > 0.9 * n, "the caller did not hear the hold audio while the human was dialled"
    assert other < 0.03 * n, "the caller heard something besides the hold audio (the briefing?)"

    # Accept: the hold audio stops, the caller hears the introduction (speech, not the tone), then the human.
    path.human_rtp.send_dtmf_pcap("1")
    time.sleep(1.5)  # DTMF -> ESL -> the gateway stops the hold audio and the AI starts the introduction
    stopped = time.monotonic()
    intro = call.wait_speech(since=stopped, min_s=1.0, timeout=15, quiet_s=0.5)
    assert intro is not None, "the caller heard no introduction"
    n, tone, other = tone_frames(call.rtp.audio_packets(since=stopped, until=intro[1]))
    assert tone < 10, f"the hold audio went on after the human accepted ({tone} of {n} frames)"
    assert other > 40, "the caller heard no introduction besides the tone"
    t = time.monotonic()
    path.human_rtp.say(phrase("Hello, this is Sam from billing."))
    assert call.wait_speech(since=t, min_s=1.0, timeout=10, quiet_s=0.3) is not None, \
        "the caller does not hear the human after the warm transfer"


def test_on_hold_the_ai_does_not_answer_then_takes_the_caller_back_when_nobody_answers(hold_path):
    handoff = {"mode": "warm", "max_hops": 2, "hold_audio": HOLD, "on_no_answer": "carry_on",
               "targets": [{"target": "billing", "timeout_s": 9}]}
    path = hold_path(handoff, human={"noanswer": ("2001",)})
    call = path.call(wait_bye_s=120)
    assert call.wait_answered(15)
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0) is not None, \
        "the caller heard no greeting"
    assert call.ask_and_confirm(phrase(HUMAN), phrase(YES)) is not None, "the agent did not ask first"
    deadline = time.monotonic() + 30
    while not path.human.received("INVITE") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.human.received("INVITE"), "the human was never dialled"
    dialled_at = time.monotonic()
    # The caller asks a question the AI answers at any other time, while the human rings (9 s).
    time.sleep(0.5)
    asked = call.say(phrase(OPENING_HOURS))
    time.sleep(max(0.0, dialled_at + 7.5 - time.monotonic()))
    n, tone, other = tone_frames(call.rtp.audio_packets(since=dialled_at + 0.5, until=time.monotonic()))
    print(f"\ncaller on hold, asked at +{asked - dialled_at:.1f} s: {n} frames, {tone} tone, {other} other")
    assert n > 250 and tone > 0.9 * n, "the caller did not hear the hold audio while the human rang"
    assert other < 0.03 * n, "the caller heard something besides the hold audio (the AI answering?)"
    # No answer in 9 s: the hold audio stops and the AI tells the caller it carries on itself.
    back = first_other_sound(call, dialled_at + 7.5, timeout=25)
    assert back is not None, "the AI did not take the caller back"
    said = call.wait_speech(since=back, min_s=1.5, timeout=20, quiet_s=0.8)
    assert said is not None, "the AI did not take the caller back"
    n, tone, other = tone_frames(call.rtp.audio_packets(since=said[0], until=said[1]))
    assert tone < 10 and other > 40, f"after no answer: {tone} tone and {other} other of {n} frames"
    # Back with the AI: the same question gets an answer again.
    asked = call.say(phrase(OPENING_HOURS))
    answer = call.wait_speech(since=asked, min_s=1.0, timeout=20, quiet_s=0.8)
    assert answer is not None, "the AI did not answer the caller after taking them back"
    n, tone, other = tone_frames(call.rtp.audio_packets(since=answer[0], until=answer[1]))
    assert tone < 10 and other > 40, f"the answer: {tone} tone and {other} other of {n} frames"
