"""RTP towards the caller for the whole call (issue 10 item 9, patch 0002): while the agent is silent the
patched build sends a frame of digital silence every 20 ms, so a carrier's RTP inactivity timer never
fires; the agent's replies still reach the caller frame for frame. The stock voxcom build sends nothing
at all between replies (the defect, kept here as its proof).

The gateway's side sends a greeting, then nothing for 3 s, then a second reply, each as paced 20 ms
`streamAudio` messages; what the caller's RTP endpoint receives is judged on the wire."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from fsmod_support import StreamSession, stream_audio_message
from harness.rtp import FRAME_BYTES, PCMU_SILENCE, Packet, frame_level_dbfs, speech_pcmu, ulaw_decode

if TYPE_CHECKING:  # `from conftest import` at run time picks whichever area's conftest loaded last
    from conftest import Rig

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

# 127.0.0.190-199: this file's own addresses (one caller + one FreeSWITCH per build, so both can run
# side by side and next to the rest of tests/packaging).
ADDRS = {"patched": ("127.0.0.190", "127.0.0.191"), "voxcom": ("127.0.0.192", "127.0.0.193")}
QUIET_S = 3.0


def _frames(text: str) -> list[bytes]:
    """Speech frames, the quiet ones at either end left out (so a reply starts and ends audibly)."""
    pcmu = speech_pcmu(text)
    frames = [pcmu[i:i + FRAME_BYTES] for i in range(0, len(pcmu) - FRAME_BYTES + 1, FRAME_BYTES)]
    loud = [i for i, f in enumerate(frames) if frame_level_dbfs(f) > -40]
    return frames[loud[0]:loud[-1] + 1]


GREETING = _frames("Hello, thanks for calling.")
ANSWER = _frames("Your order has shipped.")


class GreetQuietAnswer:
    """The gateway's playout: GREETING paced at 20 ms, QUIET_S of nothing, then ANSWER paced at 20 ms.
    Remembers when each part started and ended."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    async def _play(self, session: StreamSession, frames: list[bytes], name: str) -> None:
        start = time.monotonic()
        self.marks[f"{name}_start"] = start
        for i, frame in enumerate(frames):
            delay = start + i * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await session.ws.send(stream_audio_message(ulaw_decode(frame).astype("<i2").tobytes()))  # type: ignore[attr-defined]
        self.marks[f"{name}_end"] = time.monotonic()

    async def __call__(self, session: StreamSession) -> None:
        await asyncio.sleep(0.5)  # the channel is answered and parked by then
        await self._play(session, GREETING, "greeting")
        await asyncio.sleep(QUIET_S)
        await self._play(session, ANSWER, "answer")


def _aligned(heard: list[Packet], frames: list[bytes]) -> tuple[int, int, int, float]:
    """Find frames[0] among the heard payloads and walk on: (frames heard unchanged, silence frames put in
    between, other payloads, arrival of the last one matched). Silence in between is how the patched
    build fills a tick a reply frame missed; anything else would be a changed frame."""
    payloads = [p.payload for p in heard]
    i = payloads.index(frames[0])  # ValueError: the reply never reached the caller intact
    j = matched = inserted = other = 0
    last_t = heard[i].t
    while i < len(heard) and j < len(frames):
        if payloads[i] == frames[j]:
            matched, j, last_t = matched + 1, j + 1, heard[i].t
        elif payloads[i] == PCMU_SILENCE:
            inserted += 1
        else:
            other, j = other + 1, j + 1
        i += 1
    return matched, inserted, other, last_t


async def _call(rig_factory, edition: str) -> tuple[Rig, GreetQuietAnswer]:
    caller_ip, fs_ip = ADDRS[edition]
    rig: Rig = await rig_factory(edition, caller_ip=caller_ip, fs_ip=fs_ip)
    gateway = GreetQuietAnswer()
    rig.behave(gateway)
    talk_s = 0.5 + (len(GREETING) + len(ANSWER)) * 0.02 + QUIET_S
    sipp = rig.call("idle-rtp", hangup_after_ms=int((talk_s + 1.5) * 1000), timeout_s=60)
    try:
        await asyncio.wait_for(rig.server.sessions.get(), 15)
        deadline = time.monotonic() + talk_s + 15
        while "answer_end" not in gateway.marks:
            assert time.monotonic() < deadline, "the gateway never finished its two replies"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(sipp.wait, 20) == 0
    finally:
        sipp.stop()
    return rig, gateway


async def test_patched_build_sends_silence_every_20ms_between_replies_and_the_replies_unchanged(rig_factory):
    rig, gateway = await _call(rig_factory, "patched")
    heard = [p for p in rig.rtp.audio_packets() if p.pt == 0]

    g_matched, g_inserted, g_other, g_last = _aligned(heard, GREETING)
    a_matched, a_inserted, a_other, a_last = _aligned(heard, ANSWER)
    a_first = next(p.t for p in heard if p.payload == ANSWER[0])
    print(f"greeting {g_matched}/{len(GREETING)} unchanged (+{g_inserted} silence, {g_other} other); "
          f"answer {a_matched}/{len(ANSWER)} unchanged (+{a_inserted} silence, {a_other} other)")
    assert g_matched >= 0.98 * len(GREETING) and g_other <= 0.02 * len(GREETING)
    assert a_matched >= 0.98 * len(ANSWER) and a_other <= 0.02 * len(ANSWER)

    # From the first greeting frame to the end of the answer: a packet at least every ~20 ms.
    first = next(p.t for p in heard if p.payload == GREETING[0])
    gap = rig.rtp.longest_gap(first, a_last)
    quiet = [p for p in heard if g_last < p.t < a_first]
    quiet_s = a_first - g_last
    print(f"longest gap {gap * 1000:.1f} ms; quiet part {quiet_s:.2f} s carried {len(quiet)} packets")
    assert gap < 0.1, f"the caller got no RTP for {gap * 1000:.0f} ms"
    assert quiet_s > QUIET_S - 0.5
    assert len(quiet) >= 0.9 * quiet_s / 0.02, "RTP did not flow every 20 ms while the agent was silent"
    assert all(p.payload == PCMU_SILENCE for p in quiet), "the quiet part carried something but silence"
    # And after the answer, until the caller hangs up, silence keeps flowing too.
    tail = [p for p in heard if p.t > a_last]
    assert tail and all(p.payload == PCMU_SILENCE for p in tail)
    assert rig.rtp.longest_gap(a_last, tail[-1].t) < 0.1


async def test_stock_voxcom_build_sends_no_rtp_while_the_agent_is_silent(rig_factory):
    """The defect the patch fixes: between the two replies the caller's RTP stops for the whole pause."""
    rig, gateway = await _call(rig_factory, "voxcom")
    heard = [p for p in rig.rtp.audio_packets() if p.pt == 0]
    _, _, _, g_last = _aligned(heard, GREETING)
    a_first = next(p.t for p in heard if p.payload == ANSWER[0])
    gap = rig.rtp.longest_gap(g_last, a_first)
    print(f"stock build: no RTP for {gap:.2f} s between the replies")
    assert gap > QUIET_S - 0.5
