"""A Twilio Media Streams call end to end: the signed TwiML webhook, the bidirectional stream (greeting,
marks, DTMF, barge-in with `clear`) and call control through the official SDK against a local fake of
Twilio's REST API. Listeners on 127.0.0.41."""

from __future__ import annotations

import asyncio
import json
import secrets

import aiohttp
import pytest
from fakes.twilio_rest import FakeTwilioRest
from gw_helpers import tone
from twilio.request_validator import RequestValidator

from gateway.client.twilio_call import place_twilio_call

HOST = "127.0.0.41"
TOKEN = secrets.token_hex(16)
ACCOUNT = "AC" + "ab" * 16

STACKS = pytest.mark.parametrize("media_stack", ["aiohttp", "raw"])  # GATEWAY_MEDIA_STACK


@pytest.fixture
async def rest():
    fake = await FakeTwilioRest(ACCOUNT, TOKEN, host=HOST).start()
    yield fake
    await fake.close()


async def _gateway(make_gateway, rest, **kw):
    return await make_gateway(media_host=HOST, admin_host=HOST, twilio_auth_token=TOKEN,
                              twilio_account_sid=ACCOUNT, twilio_api_base_url=rest.base_url, **kw)


def _stream_url(gw) -> str:
    return f"ws://{HOST}:{gw.media_port}/twilio/stream"


async def test_voice_webhook_answers_connect_stream_only_when_signed(make_gateway, fake_model, rest):
    model = await fake_model()
    gw = await _gateway(make_gateway, rest, model_url=model.url)
    url = f"http://{HOST}:{gw.media_port}/twilio/voice"
    form = {"CallSid": "CA" + "cd" * 16, "From": "+15550111", "To": "+15550100", "AccountSid": ACCOUNT}
    good = RequestValidator(TOKEN).compute_signature(url, form)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=form, headers={"X-Twilio-Signature": good}) as r:
            assert r.status == 200
            twiml = await r.text()
        async with http.post(url, data={**form, "To": "+19005550000"},
                             headers={"X-Twilio-Signature": good}) as r:
            assert r.status == 403  # the signature covers every parameter
        async with http.post(url, data=form) as r:
            assert r.status == 403
    assert f'<Stream url="ws://{HOST}:{gw.media_port}/twilio/stream">' in twiml
    assert '<Parameter name="profile" value="front-desk" />' in twiml  # chosen by the called number
    assert '<Parameter name="caller" value="+15550111" />' in twiml
    assert f'<Parameter name="callSid" value="{form["CallSid"]}" />' in twiml


@STACKS
async def test_unsigned_stream_is_refused_and_other_calls_go_on(make_gateway, fake_model, rest):
    model = await fake_model(greeting_ms=600, reply_ms=600)
    gw = await _gateway(make_gateway, rest, model_url=model.url)
    bad = await place_twilio_call(_stream_url(gw), tone(0.3, 8000), auth_token="wrong-token", reply_timeout=3)
    assert bad.http_status == 403
    good = await place_twilio_call(_stream_url(gw), tone(0.6, 8000, tail_silence=0.5), auth_token=TOKEN,
                                   reply_timeout=5)
    assert good.errors == [] and good.greeting_s > 0.5 and good.reply_s > 0.5


@STACKS
async def test_conversation_marks_dtmf_and_barge_in_clear(make_gateway, fake_model, rest):
    # A 4 s greeting at 2x real time; the caller talks over it 1 s in.
    model = await fake_model(greeting_ms=4000, reply_ms=800, speed=2.0)
    gw = await _gateway(make_gateway, rest, model_url=model.url)
    s = await place_twilio_call(_stream_url(gw), tone(0.8, 8000, lead_silence=1.0, tail_silence=0.5),
                                auth_token=TOKEN, wait_for_greeting=False, dtmf="7", reply_timeout=8)
    print(s)
    assert s.errors == [], s
    assert s.clears >= 1  # barge-in emptied Twilio's buffer
    assert s.marks_sent_back >= 1  # marks went out after agent audio and came back once played
    (session,) = model.sessions
    assert session.invalid_client_events == []
    dtmf = [e for e in session.of_type("conversation.item.create") if "DTMF key 7" in json.dumps(e)]
    assert dtmf
    (truncate,) = session.of_type("conversation.item.truncate")
    assert 0 <= truncate["audio_end_ms"] <= session.generated_ms[truncate["item_id"]]
    assert s.heard_s < 2.5  # far less than the 4 s greeting was heard
    (update,) = session.of_type("session.update")
    assert update["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}  # no transcoding
    assert s.reply_s > 0.5 and s.first_reply_latency_ms is not None  # the answer after the interruption


async def test_admin_verbs_reach_twilio_rest(make_gateway, fake_model, rest):
    model = await fake_model(greeting_ms=6000, speed=1.0)
    gw = await _gateway(make_gateway, rest, model_url=model.url)
    call = asyncio.create_task(place_twilio_call(_stream_url(gw), tone(0.2, 8000), auth_token=TOKEN,
                                                 greeting_timeout=8, reply_timeout=8))
    admin = f"http://{HOST}:{gw.admin_port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            async with http.get(f"{admin}/calls") as r:
                calls = await r.json()
            if calls and calls[0]["call_control"]:
                break
            await asyncio.sleep(0.05)
        sid = calls[0]["uuid"]
        assert sid.startswith("CA") and calls[0]["ingress"] == "twilio"
        async with http.post(f"{admin}/calls/{sid}/transfer", json={"target": "billing"}) as r:
            assert r.status == 200, await r.text()
        rest.unknown_calls.add(sid)
        async with http.post(f"{admin}/calls/{sid}/transfer", json={"target": "billing"}) as r:
            assert r.status == 502 and "not found" in (await r.json())["detail"]
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    (first, *_) = rest.calls_updates()
    assert first["Twiml"] == ('<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Number>2001</Number>'
                              '</Dial></Response>')
