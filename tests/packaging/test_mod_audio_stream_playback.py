"""The patched build still plays the gateway's paced `streamAudio` as the caller should hear it: every 20 ms
message reaches the caller's RTP unchanged (G.711 u-law decoded to L16 and re-encoded by FreeSWITCH is the
identity), in order, and the audio stops right after the last message."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from fsmod_support import StreamSession, stream_audio_message
from harness.rtp import FRAME_BYTES, frame_level_dbfs, speech_pcmu, ulaw_decode

if TYPE_CHECKING:  # `from conftest import` at run time picks whichever area's conftest loaded last
    from conftest import Rig

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

SPEECH = speech_pcmu("Thank you for calling. Your appointment is confirmed for Tuesday at ten.")
FRAMES = [SPEECH[i:i + FRAME_BYTES] for i in range(0, len(SPEECH) - FRAME_BYTES + 1, FRAME_BYTES)]


class PacedReply:
    """Sends FRAMES as 20 ms streamAudio messages on an absolute real-time schedule, as the gateway's
    playout clock does, and remembers when the last one left."""

    def __init__(self) -> None:
        self.last_sent: float | None = None

    async def __call__(self, session: StreamSession) -> None:
        await asyncio.sleep(0.5)  # the channel is answered and parked by then
        start = time.monotonic()
        for i, frame in enumerate(FRAMES):
            delay = start + i * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.ws.send(stream_audio_message(ulaw_decode(frame).astype("<i2").tobytes()))  # type: ignore[attr-defined]
        self.last_sent = time.monotonic()


async def test_patched_build_plays_paced_stream_audio_unchanged_and_stops_with_the_last_message(rig_factory):
    rig: Rig = await rig_factory("patched")
    reply = PacedReply()
    rig.behave(reply)
    sipp = rig.call("playback", hangup_after_ms=int(len(FRAMES) * 20 + 3000), timeout_s=60)
    try:
        await asyncio.wait_for(rig.server.sessions.get(), 15)
        deadline = time.monotonic() + len(FRAMES) * 0.02 + 10
        while reply.last_sent is None:
            assert time.monotonic() < deadline, "the paced reply never finished sending"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(sipp.wait, 20) == 0
    finally:
        sipp.stop()

    heard = [p for p in rig.rtp.audio_packets() if p.pt == 0]
    payloads = [p.payload for p in heard]
    first = payloads.index(FRAMES[0])  # ValueError here: the first message never reached the caller intact
    played = payloads[first:first + len(FRAMES)]
    matching = sum(a == b for a, b in zip(played, FRAMES, strict=False))
    assert matching >= 0.98 * len(FRAMES), f"{matching}/{len(FRAMES)} frames reached the caller unchanged"

    # The end: the last message's frame leaves FreeSWITCH right after it was sent, and silence follows.
    assert reply.last_sent is not None
    last = heard[first + len(FRAMES) - 1]
    tail = last.t - reply.last_sent
    print(f"unchanged {matching}/{len(FRAMES)} frames; the last heard {tail * 1000:.1f} ms after it was sent")
    assert tail < 0.1, f"the last message played {tail:.3f} s after it was sent"
    after = [p for p in heard if p.t > last.t]
    assert all(frame_level_dbfs(p.payload) <= -40 for p in after), "audio went on after the last message"
