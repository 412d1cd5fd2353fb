"""Issue 10 item 1 on the real FreeSWITCH: a channel must end when the caller hangs up, the call is
transferred or killed while more `streamAudio` reply audio is queued than the module's 20 ms write
buffer holds.

The gateway's side is a WebSocket server that answers the module's stream with several seconds of reply
audio at once (what a model that talks faster than real time produces when nothing paces it). The stock
voxcom build keeps the channel for good; the build from packaging/mod_audio_stream must not.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from fsmod_support import StreamSession, stream_audio_message, tone
from harness.sipp import Sipp

if TYPE_CHECKING:  # `from conftest import` at run time picks whichever area's conftest loaded last
    from conftest import Rig

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

QUEUED_SECONDS = 6.0  # reply audio sent at once: 300 messages of 20 ms, 15 s of buffer-fulls for the module


async def flood(session: StreamSession) -> None:
    pcm = tone(QUEUED_SECONDS)
    for i in range(0, len(pcm), 320):
        await session.ws.send(stream_audio_message(pcm[i:i + 320]))  # type: ignore[attr-defined]


async def wait_calls(rig: Rig, count: int, within: float) -> float | None:
    """Seconds until `show calls count` is `count`, or None if it is not within `within` seconds."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await asyncio.to_thread(rig.fs.calls) == count:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


async def caller_bye_while_queued(rig: Rig, name: str) -> tuple[int | None, float | None]:
    """Call in, let the flood start, hang up from the caller; return (SIPp exit code, s until 0 calls)."""
    rig.behave(flood)
    sipp = rig.call(name, hangup_after_ms=2000, timeout_s=20)
    try:
        session = await asyncio.wait_for(rig.server.sessions.get(), 15)
        assert session.metadata.get("callee") == "1000"
        # Reply audio is playing (the caller hears it) before the BYE leaves.
        await asyncio.sleep(1.0)
        assert rig.rtp.speech_seconds() > 0.2, "the caller heard no reply audio"
        code = await asyncio.to_thread(sipp.wait, 20)
        cleared = await wait_calls(rig, 0, 2.0)
        return code, cleared
    finally:
        sipp.stop()


async def test_stock_voxcom_build_keeps_the_channel_after_the_bye(rig_factory) -> None:
    """Documents the defect the patch fixes (and that the flood reproduces it): sofia answers the BYE, but
    the channel never hangs up, and only SIGKILL stops FreeSWITCH."""
    rig: Rig = await rig_factory("voxcom")
    _, cleared = await caller_bye_while_queued(rig, "stock-bye")
    assert cleared is None
    assert await asyncio.to_thread(rig.fs.calls) == 1
    # An idle FreeSWITCH stops in about 4 s here; this one needs the SIGKILL that follows the timeout.
    assert await asyncio.to_thread(rig.fs.stop, 12.0) == -9, "stock FreeSWITCH stopped on SIGTERM"


async def test_patched_build_answers_the_bye_and_clears_the_channel(rig_factory) -> None:
    rig: Rig = await rig_factory("patched")
    code, cleared = await caller_bye_while_queued(rig, "patched-bye")
    assert code == 0, "the caller's BYE was not answered 200"
    assert cleared is not None, "a channel survived the BYE"
    await stops_on_sigterm(rig)


async def stops_on_sigterm(rig: Rig) -> None:
    assert await asyncio.to_thread(rig.fs.stop, 15.0) == 0, "FreeSWITCH did not stop on SIGTERM"


async def _call_with_flood(rig: Rig, name: str) -> tuple[Sipp, StreamSession, str]:
    rig.behave(flood)
    sipp = rig.call(name, wait_bye_s=30, timeout_s=40)
    session = await asyncio.wait_for(rig.server.sessions.get(), 15)
    # The stream URL is <gateway>/<uuid>?tenant=&profile=&callee= (ai_stream_start.lua names the call's
    # tenant for the gateway's per-tenant admission): the channel uuid is the last path segment.
    uuid = urlsplit(session.path).path.rsplit("/", 1)[-1]
    await asyncio.sleep(1.0)
    return sipp, session, uuid


async def test_patched_build_lets_esl_hang_up_while_audio_is_queued(rig_factory) -> None:
    rig: Rig = await rig_factory("patched")
    sipp, session, uuid = await _call_with_flood(rig, "patched-kill")
    try:
        assert "+OK" in await asyncio.to_thread(rig.fs.api, f"uuid_kill {uuid}")
        assert await wait_calls(rig, 0, 2.0) is not None, "uuid_kill left the channel up"
        assert await asyncio.to_thread(sipp.wait, 10) == 0, "the caller got no BYE"
        await asyncio.wait_for(session.closed.wait(), 5)
    finally:
        sipp.stop()
    await stops_on_sigterm(rig)


async def test_patched_build_lets_a_transfer_stop_the_stream_while_audio_is_queued(rig_factory) -> None:
    """The project's transfer to a conference runs `uuid_audio_stream <uuid> stop` on the channel's own
    thread (dialplan ai-conference): with the stock build that is where the channel wedges."""
    rig: Rig = await rig_factory("patched")
    sipp, session, uuid = await _call_with_flood(rig, "patched-transfer")
    try:
        await asyncio.to_thread(rig.fs.api, f"uuid_setvar {uuid} ai_conference ai-fsmod-{uuid[:8]}")
        reply = await asyncio.to_thread(rig.fs.api, f"uuid_transfer {uuid} ai-conference XML ai-transfer")
        assert "+OK" in reply
        await asyncio.wait_for(session.closed.wait(), 5)  # the stream stopped: the module let go of it

        async def in_conference() -> bool:
            return f"ai-fsmod-{uuid[:8]}" in await asyncio.to_thread(rig.fs.api, "conference list")
        deadline = time.monotonic() + 3
        while not await in_conference():
            assert time.monotonic() < deadline, "the transferred caller never reached the conference"
            await asyncio.sleep(0.1)
        assert "+OK" in await asyncio.to_thread(rig.fs.api, f"uuid_kill {uuid}")
        assert await wait_calls(rig, 0, 2.0) is not None
        assert await asyncio.to_thread(sipp.wait, 10) == 0, "the caller got no BYE"
    finally:
        sipp.stop()
    await stops_on_sigterm(rig)
