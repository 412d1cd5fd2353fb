"""CallSession through the transport seam alone: an in-memory transport and a recording model link,
no socket and no web framework. Issue 10 items 1, 8 and 10 at the call level."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
import pytest

from gateway.call.session import CallSession
from gateway.call.transport import CallerAudio, Dtmf, InEvent, StreamStart
from gateway.profiles import load_profiles
from gateway.settings import DEFAULT_PROFILES_DIR, Settings

FRAME = bytes(320)  # 20 ms of L16 silence at 8 kHz


class MemoryTransport:
    codec_name, frame_ms, echoes_marks = "memory", 20, False

    def __init__(self) -> None:
        self.inbound: asyncio.Queue[InEvent | None] = asyncio.Queue()
        self.sent: list[tuple[float, int]] = []  # (monotonic time, bytes)
        self.closed = False

    async def start(self, timeout: float) -> StreamStart:  # noqa: ASYNC109 - the seam's signature
        return StreamStart(call_id="call-1", rate=8000, callee="+15550100")

    async def events(self):  # type: ignore[no-untyped-def]
        while (event := await self.inbound.get()) is not None:
            yield event

    async def send_audio(self, audio: bytes) -> bool:
        self.sent.append((time.monotonic(), len(audio)))
        return True

    async def clear(self) -> None: ...
    async def mark(self, name: str) -> None: ...
    async def send_side_text(self, doc: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        self.inbound.put_nowait(None)

    def audio_sent_ms(self) -> float:
        return sum(n for _, n in self.sent) / 16.0


class RecordingLink:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.audio_bytes = 0
        self.appended: list[bytes] = []

    def append_audio(self, payload: bytes) -> None:
        self.audio_bytes += len(payload)
        self.appended.append(payload)

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def run(self, setup: list[dict[str, Any]]) -> None:
        self.events.extend(setup)
        await asyncio.Event().wait()

    async def close(self) -> None: ...


class RecordingControl:
    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.calls: list[tuple[str, str, float]] = []  # (verb, target, agent audio ms sent by then)
        self.on_dtmf = None

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        self.calls.append(("transfer", target, self.transport.audio_sent_ms()))

    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None: ...
    async def add_participant(self, target: str) -> None: ...

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        self.calls.append(("hangup", cause, self.transport.audio_sent_ms()))

    def release(self) -> None: ...


def delta(item: str, ms: int) -> dict[str, Any]:
    return {"type": "response.output_audio.delta", "item_id": item, "response_id": f"r-{item}",
            "delta": base64.b64encode(b"\xff" * (8 * ms)).decode()}


@pytest.fixture
async def call():
    transport = MemoryTransport()
    link = RecordingLink()
    control = RecordingControl(transport)
    session = CallSession(transport, settings=Settings(playout_lead_ms=60),
                          profiles=load_profiles(DEFAULT_PROFILES_DIR, "front-desk"),
                          fallback_audio=lambda p, r: bytes(1600), control_factory=lambda s, start: control,
                          model_factory=lambda s: link)
    task = asyncio.create_task(session.run())
    for _ in range(100):
        if session.state == "active":
            break
        await asyncio.sleep(0.01)
    yield session, transport, link, control
    await transport.close(1000, "test over")
    await asyncio.wait_for(task, 5)


async def test_model_transfer_waits_for_the_spoken_confirmation_to_play_out(call):
    session, transport, link, control = call
    session.dispatch({"type": "response.created", "response": {"id": "r1"}})
    session.dispatch(delta("i1", 300))
    session.dispatch({"type": "response.function_call_arguments.done", "call_id": "c1",
                      "name": "transfer_call", "arguments": '{"target": "billing"}'})
    session.dispatch({"type": "response.done", "response": {"id": "r1"}})
    # The tool result goes back at once and the model is asked to speak the confirmation...
    for _ in range(100):
        if any(e.get("item", {}).get("type") == "function_call_output" for e in link.events):
            break
        await asyncio.sleep(0.01)
    assert control.calls == []  # ...but nothing has moved the call yet
    session.dispatch({"type": "response.created", "response": {"id": "r2"}})
    session.dispatch(delta("i2", 600))  # "Transferring you to billing now."
    session.dispatch({"type": "response.done", "response": {"id": "r2"}})
    for _ in range(300):
        if control.calls:
            break
        await asyncio.sleep(0.01)
    (verb, target, sent_ms) = control.calls[0]
    assert (verb, target) == ("transfer", "2001")
    assert sent_ms == pytest.approx(900, abs=1)  # every frame of both replies went out before the move
    last_send = transport.sent[-1][0]
    # ...and had played: at least the last frame's 20 ms after it was sent (the lead drained).
    assert session.outcome == "transferred" and time.monotonic() - last_send >= 0.02


async def test_reply_latency_starts_at_the_end_of_speech_not_at_the_vad_event(call):
    session, transport, link, control = call
    for _ in range(50):  # 1 s of caller audio
        await transport.inbound.put(CallerAudio(FRAME))
        await asyncio.sleep(0.02)
    # The model reports that speech ended 600 ms into the input, after its own silence window.
    session.dispatch({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 600, "item_id": "u1"})
    await asyncio.sleep(0.1)
    session.dispatch({"type": "response.created", "response": {"id": "r1"}})
    session.dispatch(delta("i1", 200))
    for _ in range(100):
        if session.stats.last_reply_latency_ms is not None:
            break
        await asyncio.sleep(0.01)
    # ~400 ms of the input after the speech end, then the 100 ms wait: never the 1-4 ms of issue 10.
    assert session.stats.last_reply_latency_ms >= 450


async def test_benign_cancel_error_is_not_a_model_error(call):
    session, transport, link, control = call
    session.dispatch({"type": "error", "error": {"type": "invalid_request_error",
                                                 "code": "response_cancel_not_active", "message": "none"}})
    assert session.stats.model_errors == 0 and session.state == "active"


async def test_on_hold_the_model_hears_silence_and_nothing_it_says_reaches_the_caller(call):
    """A warm transfer's hold (gateway/handoff/warm.py): the caller's words, keys and any agent audio stop
    at the session; its model session goes on, and everything flows again once the caller is back."""
    session, transport, link, control = call
    loud = (np.sin(np.arange(160) * 0.3) * 8000).astype("<i2").tobytes()  # 20 ms of a loud tone
    session.dispatch({"type": "response.created", "response": {"id": "r1"}})
    session.hold(True)  # a reply under way when the hold starts is cancelled
    assert link.events[-1] == {"type": "response.cancel"}
    before = len(link.appended)
    for _ in range(10):
        await transport.inbound.put(CallerAudio(loud))
    await transport.inbound.put(Dtmf("5"))
    await asyncio.sleep(0.2)
    held = link.appended[before:]
    assert len(held) == 10 and all(p == b"\xff" * 160 for p in held)  # mu-law silence, same length
    assert not [e for e in link.events if "DTMF" in str(e)]
    session.dispatch({"type": "response.created", "response": {"id": "r2"}})
    session.dispatch(delta("i2", 200))
    await asyncio.sleep(0.3)
    assert transport.sent == []  # the caller hears the hold audio, not the agent

    session.hold(False)
    for _ in range(3):
        await transport.inbound.put(CallerAudio(loud))
    await transport.inbound.put(Dtmf("5"))
    await asyncio.sleep(0.2)
    assert all(p != b"\xff" * 160 for p in link.appended[before + 10:])
    assert len(link.appended) == before + 13
    assert [e for e in link.events if "DTMF key 5" in str(e)]
    session.dispatch(delta("i3", 200))
    for _ in range(100):
        if transport.sent:
            break
        await asyncio.sleep(0.01)
    assert transport.audio_sent_ms() > 0


def test_input_timeline_finds_the_speech_end_after_the_ring_wrapped():
    """The end of the caller's speech (`audio_end_ms`) turns into the clock time that audio arrived, also
    once more than the kept 5 s have flowed (the ring wrapped) and with frames arriving unevenly: the
    reply latency the operator reads starts there."""
    import random

    from gateway.call.session import _InputTimeline

    rng = random.Random(7)
    timeline, kept = _InputTimeline(keep=250), []
    now, ms = 100.0, 0.0
    # ~20 s of 20 ms frames (the ring wraps, not back at its start), jittered, a 10 ms frame now and then
    for _ in range(1_037):
        frame = 10.0 if rng.random() < 0.05 else 20.0
        now += frame / 1000 + rng.uniform(-0.008, 0.015)
        ms += frame
        timeline.add(frame, now)
        kept = [*kept, (ms, now)][-250:]
    assert timeline.ms == ms
    for audio_ms in (kept[0][0] + 3, kept[120][0] - 7.5, kept[-1][0], kept[-1][0] - 0.5, kept[200][0]):
        end, at = next(p for p in kept if p[0] >= audio_ms)
        assert timeline.time_of(audio_ms) == pytest.approx(at - (end - audio_ms) / 1000)
    # Before the oldest kept frame: the oldest one's estimate; beyond what arrived: unknown.
    assert timeline.time_of(10.0) == pytest.approx(kept[0][1] - (kept[0][0] - 10.0) / 1000)
    assert timeline.time_of(ms + 1) is None
    assert _InputTimeline().time_of(0.0) is None
