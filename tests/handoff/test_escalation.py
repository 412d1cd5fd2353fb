"""The `escalate` tool with a handoff profile, through a real in-process `gateway serve`: the live
model's out-of-band summary (the caller hears nothing of it), redacted SIP headers on the transfer, the
handoff fetched by id at the admin API (read scope), the signed webhook, and the hop cap."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib

import aiohttp
import pytest
from handoff_env import ESL_HOST, METRICS_TOKEN, PROFILE, READ_TOKEN, STREAM_TOKEN, WEBHOOK_SECRET
from handoff_receiver import Receiver

from gateway.client.call import place_call
from gateway.handoff.summary import HANDOFF_PURPOSE

pytest.importorskip("gateway.call.control")
from fakes.freeswitch_esl import FakeFreeSwitch  # noqa: E402

SAID = "My name is Ann Lee, call me back on 415 555 0199, I was charged twice and I want a manager"
MODEL_SUMMARY = json.dumps({"summary": "Ann Lee (415 555 0199) was charged twice and wants a manager.",
                            "reason": "double charge", "urgency": "high", "sentiment": "negative",
                            "name": "Ann Lee", "callback_number": "415 555 0199"})
ESCALATE = {"name": "escalate", "arguments": {"reason": "asked for a manager", "urgency": "normal"}}


@pytest.fixture
async def freeswitch():
    fs = await FakeFreeSwitch(password="esl-handoff-secret", host=ESL_HOST).start()
    yield fs
    await fs.close()


def meta(hops: str | None = None) -> dict:
    m = {"caller": "+15550001111", "callee": "1000", "worker": "fs1", "profile": "desk", "rate": 8000}
    if hops is not None:
        m["hops"] = hops
    return m


async def _call(gw, freeswitch, wav, metadata) -> str:
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    await place_call(f"ws://{gw.settings.media_host}:{gw.media_port}/stream/{call_uuid}", wav, rate=8000,
                     metadata=metadata, token=STREAM_TOKEN, reply_timeout=3.0)
    return call_uuid


def _setvars(freeswitch, call_uuid: str) -> dict[str, str]:
    out = {}
    for c in freeswitch.api_commands():  # "uuid_setvar <uuid> sip_h_<name> <value>"
        parts = c.split(" ", 3)
        if c.startswith(f"uuid_setvar {call_uuid} sip_h_") and len(parts) == 4:
            out[parts[2].removeprefix("sip_h_")] = parts[3]
    return out


async def test_escalation_carries_a_redacted_model_summary_by_header_fetch_and_webhook(
        make_gateway, fake_model, freeswitch, manager_wav):
    receiver = await Receiver(WEBHOOK_SECRET.encode()).start()
    try:
        model = await fake_model(greeting_ms=300, reply_ms=300, tool=ESCALATE, caller_transcript=SAID,
                                 oob_text=MODEL_SUMMARY)
        gw = await make_gateway(
            profile={"handoff": {**_handoff(), "webhook_url": receiver.url}},
            model_url=model.url, esl_workers={"fs1": freeswitch.address}, records_model_summary=True)
        await gw.control_plane.wait_connected(5)
        call_uuid = await _call(gw, freeswitch, manager_wav, meta())
        command = await freeswitch.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=10)
        assert command == f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"  # the first target
        headers = _setvars(freeswitch, call_uuid)
        handoff_id = headers["X-AI-Handoff-Id"]
        assert handoff_id.startswith("ho_")
        assert headers["X-AI-Hops"] == "1"
        assert headers["X-AI-Skill"] == "billing" and headers["X-AI-Queue"] == "billing-queue"
        assert headers["X-AI-Priority"] == "5" and headers["X-AI-VIP"] == "true"
        assert headers["X-AI-Urgency"] == "high"  # the model's judgement over the tool's "normal"
        assert "charged twice" in headers["X-AI-Summary"]
        assert "[PHONE ***0199]" in headers["X-AI-Summary"]
        wire = " ".join(freeswitch.api_commands())
        assert "415 555" not in wire and "4155550199" not in wire, "a phone number went out in clear"

        # The summary was an out-of-band response: asked once, and not a reply the caller heard.
        (oob,) = [e for e in model.sessions[0].of_type("response.create")
                  if (e.get("response") or {}).get("conversation") == "none"]
        assert oob["response"]["metadata"]["purpose"] == HANDOFF_PURPOSE
        assert oob["response"]["output_modalities"] == ["text"]

        # The human side fetches the handoff by id: read scope, redacted.
        admin = f"http://{gw.settings.admin_host}:{gw.admin_port}/handoffs/{handoff_id}"
        async with aiohttp.ClientSession() as http:
            async with http.get(admin) as r:
                assert r.status == 401
            async with http.get(admin, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as r:
                assert r.status == 403
            async with http.get(admin + "x", headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
                assert r.status == 404
            async with http.get(admin, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
                assert r.status == 200
                doc = await r.json()
        assert doc["id"] == handoff_id and doc["call_id"] == call_uuid and doc["hops"] == 1
        assert doc["summary"]["source"] == "model" and doc["summary"]["redacted_by"] == "profile"
        assert doc["summary"]["slots"]["name"] == "Ann Lee"
        assert doc["summary"]["slots"]["callback_number"] == "[PHONE ***0199]"
        assert any("charged twice" in t["text"] for t in doc["transcript"])
        assert doc["attempts"][0]["target"] == "billing" and doc["attempts"][0]["result"] == "transferred"
        assert "415 555" not in json.dumps(doc)

        for _ in range(100):  # the webhook goes out in the background
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
        (req,) = receiver.requests
        assert req["valid"]
        body = json.loads(req["body"])
        assert body["handoff_id"] == handoff_id and body["attributes"]["skill"] == "billing"
        assert "415 555" not in req["body"].decode()
        assert doc["deliveries"] == [] or doc["deliveries"][0]["ok"]
    finally:
        await receiver.stop()


async def test_a_call_handed_on_max_hops_times_is_not_handed_on_again(make_gateway, fake_model, freeswitch,
                                                                      manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, tool=ESCALATE, caller_transcript=SAID)
    gw = await make_gateway(model_url=model.url, esl_workers={"fs1": freeswitch.address})
    await gw.control_plane.wait_connected(5)
    call_uuid = await _call(gw, freeswitch, manager_wav, meta(hops="2"))
    outputs = []
    for _ in range(100):
        items = model.sessions[0].of_type("conversation.item.create")
        outputs = [json.loads(e["item"]["output"]) for e in items
                   if e["item"].get("type") == "function_call_output"]
        if outputs:
            break
        await asyncio.sleep(0.05)
    (out,) = outputs
    assert out["ok"] is False and out["hop_limit"] is True and "limit is 2" in out["error"]
    assert not [c for c in freeswitch.api_commands() if c.startswith(f"api uuid_transfer {call_uuid}")]


async def test_with_the_embedded_engine_the_summary_is_extractive_and_no_out_of_band_request_is_sent(
        make_gateway, fake_model, freeswitch, manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, tool=ESCALATE, caller_transcript=SAID)
    gw = await make_gateway(model_url=model.url, esl_workers={"fs1": freeswitch.address})
    await gw.control_plane.wait_connected(5)
    call_uuid = await _call(gw, freeswitch, manager_wav, meta(hops="1"))
    await freeswitch.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=10)
    headers = _setvars(freeswitch, call_uuid)
    assert headers["X-AI-Hops"] == "2"
    assert not [e for e in model.sessions[0].of_type("response.create")
                if (e.get("response") or {}).get("conversation") == "none"]
    h = gw.handoffs.store.get(headers["X-AI-Handoff-Id"])
    assert h is not None and h.summary.source == "extractive"
    assert h.summary.slots.name == "Ann Lee" and "charged twice" in h.summary.text
    assert "415 555" not in headers["X-AI-Summary"]


def _handoff() -> dict:
    return dict(PROFILE["handoff"])


async def test_an_operator_hands_the_call_over_from_the_admin_api(make_gateway, fake_model, freeswitch):
    from gw_helpers import tone
    from handoff_env import CONTROL_TOKEN

    model = await fake_model(greeting_ms=8000, speed=1.0)
    gw = await make_gateway(model_url=model.url, esl_workers={"fs1": freeswitch.address})
    await gw.control_plane.wait_connected(5)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    call = asyncio.create_task(place_call(f"ws://{gw.settings.media_host}:{gw.media_port}/stream/{call_uuid}",
                                          tone(0.1, 8000), rate=8000, metadata=meta(), token=STREAM_TOKEN,
                                          greeting_timeout=10))
    admin = f"http://{gw.settings.admin_host}:{gw.admin_port}/calls/{call_uuid}/handoff"
    try:
        for _ in range(100):
            if call_uuid in gw.calls and gw.calls[call_uuid].control is not None:
                break
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as http:
            body = {"reason": "caller wants a refund to 4111 1111 1111 1111", "urgency": "high"}
            async with http.post(admin, json=body, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as r:
                assert r.status == 403  # a verb needs the control scope
            async with http.post(admin, json={"urgency": "whenever"},
                                 headers={"Authorization": f"Bearer {CONTROL_TOKEN}"}) as r:
                assert r.status == 422
            async with http.post(admin, json=body, headers={"Authorization": f"Bearer {CONTROL_TOKEN}"}) as r:
                assert r.status == 200, await r.text()
                doc = await r.json()
        assert doc["mode"] == "blind" and doc["target"] == "billing"
        command = await freeswitch.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=10)
        assert command == f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"
        headers = _setvars(freeswitch, call_uuid)
        assert headers["X-AI-Handoff-Id"] == doc["handoff_id"] and headers["X-AI-Urgency"] == "high"
        assert "4111" not in " ".join(freeswitch.api_commands())
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
