"""The ESL client and call control against a real FreeSWITCH: the build on this machine started with
freeswitch-conf/ (tests/conftest.py), or an external one named by FREESWITCH_ESL=host:port:password.

Uses loopback channels parked inline, so it needs no SIP, no gateway and no particular dialplan.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import AsyncIterator

import pytest

from gateway.call.control import CallControlError, ControlPlane
from gateway.esl.client import EslClient, parse_address
from gateway.esl.errors import EslCommandError
from gateway.esl.protocol import Event

pytestmark = pytest.mark.freeswitch


@pytest.fixture
async def live(freeswitch_esl: str) -> AsyncIterator[EslClient]:
    host, port, password = parse_address(freeswitch_esl)
    client = EslClient(host, port, password, reconnect=False)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def _originate_parked(client: EslClient) -> str:
    leg = str(uuidlib.uuid4())
    await client.bgapi(f"originate {{origination_uuid={leg}}}loopback/m:^:answer^park/default/inline &park()")
    return leg


async def test_api_and_bgapi_against_freeswitch(live: EslClient) -> None:
    status = await live.api("status")
    assert "FreeSWITCH" in status and "is ready" in status
    assert (await live.bgapi("status")).startswith("UP ")
    with pytest.raises(EslCommandError, match="No such channel"):
        await live.api(f"uuid_kill {uuidlib.uuid4()}")
    with pytest.raises(EslCommandError, match="No such channel"):
        await live.bgapi(f"uuid_kill {uuidlib.uuid4()}")


async def test_channel_events_fan_out_by_unique_id(live: EslClient) -> None:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    leg = str(uuidlib.uuid4())
    live.subscribe(seen.put_nowait, leg)
    await live.bgapi(f"originate {{origination_uuid={leg}}}loopback/m:^:answer^park/default/inline &park()")
    try:
        async with asyncio.timeout(10):
            while (await seen.get()).name != "CHANNEL_ANSWER":
                pass
    finally:
        await live.api(f"uuid_kill {leg}")
    async with asyncio.timeout(10):
        while (event := await seen.get()).name != "CHANNEL_HANGUP_COMPLETE":
            pass
    assert event.unique_id == leg and event.get("Hangup-Cause") == "NORMAL_CLEARING"


async def test_call_control_verbs_on_a_real_channel(freeswitch_esl: str) -> None:
    plane = ControlPlane.from_settings({"live": freeswitch_esl})
    await plane.start()
    await plane.wait_connected(10)
    client = plane.clients["live"]
    leg = await _originate_parked(client)
    control = plane.for_call(leg, "live")
    assert control is not None
    try:
        await control.play("tone_stream://%(200,0,440)")  # needs mod_tone_stream
        await control.flush_playback()
        await control.hangup("USER_BUSY")
        async with asyncio.timeout(10):
            while not control.released:  # noqa: ASYNC110 - released is set by an event handler, no waiter
                await asyncio.sleep(0.05)
        assert control.hangup_cause == "USER_BUSY"
        with pytest.raises(CallControlError, match="No such channel"):
            await control.hangup()
    finally:
        try:
            await client.api(f"uuid_kill {leg}")
        except EslCommandError:
            pass
        await plane.close()
