"""The media plane driving FreeSWITCH call control over ESL (gateway/call/control.py) against the
loopback FreeSWITCH that replays captured ESL bytes: model tools, admin verbs, DTMF, fallback transfer."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib

import aiohttp
import pytest
from gw_helpers import tone

from gateway.client.call import place_call

pytest.importorskip("gateway.call.control")
from fakes.freeswitch_esl import FakeFreeSwitch  # noqa: E402 - tests/ is on sys.path (see tests/fakes)


@pytest.fixture
async def freeswitch():
    fs = await FakeFreeSwitch(password="esl-test-secret").start()
    yield fs
    await fs.close()


async def _gateway(make_gateway, freeswitch, **kw):
    gw = await make_gateway(esl_workers={"fs1": freeswitch.address}, **kw)
    assert gw.control_plane is not None
    await gw.control_plane.wait_connected(5)
    return gw


def meta() -> dict:
    return {"caller": "+15550111", "callee": "+15550100", "worker": "fs1", "profile": "front-desk",
            "rate": 8000}


async def test_transfer_tool_runs_uuid_transfer_and_reports_success(make_gateway, fake_model, freeswitch,
                                                                    question_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300,
                             tool={"name": "transfer_call", "arguments": {"target": "billing"}})
    gw = await _gateway(make_gateway, freeswitch, model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    await place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid}", question_wav, rate=8000,
                     metadata=meta(), token="abc", reply_timeout=3.0)
    command = await freeswitch.wait_for_command("api uuid_transfer")
    assert command == f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"  # profile target "billing"
    (output,) = model.sessions[0].of_type("conversation.item.create")
    assert json.loads(output["item"]["output"]) == {"ok": True, "target": "billing"}


async def test_admin_transfer_maps_freeswitch_errors_to_502(make_gateway, fake_model, freeswitch):
    model = await fake_model(greeting_ms=8000, speed=1.0)
    gw = await _gateway(make_gateway, freeswitch, model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    stream = f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid}"
    call = asyncio.create_task(place_call(stream, tone(0.1, 8000),
                                          rate=8000, metadata=meta(), token="abc", greeting_timeout=10))
    admin = f"http://127.0.0.1:{gw.admin_port}/calls/{call_uuid}"
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            if call_uuid in gw.calls and gw.calls[call_uuid].control is not None:
                break
            await asyncio.sleep(0.02)
        async with http.post(f"{admin}/transfer", json={"target": "reception"}) as r:
            assert r.status == 200 and (await r.json())["target"] == "2000"
        freeswitch.on_api("uuid_transfer", "-ERR No such extension\n")
        async with http.post(f"{admin}/transfer", json={"target": "9999"}) as r:
            assert r.status == 502 and "No such extension" in (await r.json())["detail"]
        async with http.post(f"{admin}/hangup") as r:
            assert r.status == 200
    await freeswitch.wait_for_command(f"api uuid_kill {call_uuid}")
    await asyncio.wait_for(call, 10)


async def test_dtmf_reaches_the_model_as_a_user_item(make_gateway, fake_model, freeswitch):
    model = await fake_model(greeting_ms=3000, speed=1.0)
    gw = await _gateway(make_gateway, freeswitch, model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    stream = f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid}"
    call = asyncio.create_task(place_call(stream, tone(0.1, 8000),
                                          rate=8000, metadata=meta(), token="abc", greeting_timeout=5))
    for _ in range(100):
        if model.sessions and model.sessions[0].of_type("response.create"):
            break
        await asyncio.sleep(0.02)
    await freeswitch.emit(call_uuid, "DTMF", headers={"DTMF-Digit": "5"})
    for _ in range(100):
        items = model.sessions[0].of_type("conversation.item.create")
        if items:
            break
        await asyncio.sleep(0.02)
    assert "DTMF key 5" in items[0]["item"]["content"][0]["text"]
    await gw.calls[call_uuid].hangup("test over")
    await asyncio.wait_for(call, 10)


async def test_model_failure_plays_the_fallback_then_transfers_as_the_profile_says(
        make_gateway, freeswitch, fallback_prompts):
    gw = await _gateway(make_gateway, freeswitch, model_url="ws://127.0.0.1:9/v1")  # model unreachable
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    s = await place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid}", tone(0.1, 8000), rate=8000,
                         metadata=meta(), token="abc", greeting_timeout=8, reply_timeout=8)
    assert s.reply_pcm.endswith(fallback_prompts("front-desk", 8000))  # heard in full, then...
    command = await freeswitch.wait_for_command("api uuid_transfer")
    assert command == f"api uuid_transfer {call_uuid} 2000 XML ai-transfer"  # fallback target "reception"
    assert s.closed_by == "gateway" and s.server_closed_tcp


async def test_file_mode_sends_larger_chunks_and_barge_in_breaks_playback(make_gateway, fake_model,
                                                                         freeswitch):
    """Upstream (MIT) module: messages become files played by uuid_broadcast; barge-in must uuid_break."""
    model = await fake_model(greeting_ms=4000, reply_ms=400, speed=2.0)
    gw = await _gateway(make_gateway, freeswitch, model_url=model.url, playback_mode={"fs1": "file"})
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    caller = tone(0.8, 8000, lead_silence=1.0, tail_silence=0.5)
    s = await place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid}", caller, rate=8000,
                         metadata=meta(), token="abc", wait_for_greeting=False)
    sizes = [n for _, n in s.reply_arrivals]
    assert sizes and sizes.count(3200) >= len(sizes) - 2  # 200 ms per message (a reply's last may be shorter)
    assert await freeswitch.wait_for_command(f"api uuid_break {call_uuid} all")
    (truncate,) = model.sessions[0].of_type("conversation.item.truncate")
    assert truncate["audio_end_ms"] > 0
