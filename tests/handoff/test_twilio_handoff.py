"""A handoff on a Twilio Media Streams call: the same `escalate` tool and profile, through Twilio's REST
API (the local fake of api.twilio.com). Without a `handoff.twilio` block (test_twilio_warm.py) a Twilio
call in `mode: warm` gets the blind handoff: summary, attributes and hop count as X- headers on the <Sip>
URI (Twilio passes them on: https://www.twilio.com/docs/voice/twiml/sip#custom-headers), the handoff kept
for the fetch."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from fakes.twilio_rest import FakeTwilioRest
from handoff_env import HOST, PROFILE

from gateway.client.twilio_call import place_twilio_call

TOKEN = secrets.token_hex(16)
ACCOUNT = "AC" + "cd" * 16
SAID = "My name is Ann Lee, call me back on 415 555 0199, I want a manager"


@pytest.fixture
async def rest():
    fake = await FakeTwilioRest(ACCOUNT, TOKEN, host=HOST).start()
    yield fake
    await fake.close()


async def test_twilio_call_gets_a_blind_handoff_with_headers_on_the_sip_uri(make_gateway, fake_model, rest,
                                                                            manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID,
                             tool={"name": "escalate", "arguments": {"reason": "manager", "urgency": "high"}})
    handoff = {**PROFILE["handoff"], "mode": "warm", "targets": [{"target": "human", "queue": "managers"}]}
    gw = await make_gateway(profile={"handoff": handoff}, model_url=model.url, twilio_auth_token=TOKEN,
                            twilio_account_sid=ACCOUNT, twilio_api_base_url=rest.base_url)
    call = asyncio.create_task(place_twilio_call(f"ws://{HOST}:{gw.media_port}/twilio/stream", manager_wav,
                                                 auth_token=TOKEN, profile="desk", reply_timeout=5))
    for _ in range(200):
        if rest.calls_updates():
            break
        await asyncio.sleep(0.05)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    (update,) = rest.calls_updates()
    twiml = update["Twiml"]
    assert "<Sip>sip:+15550199@trunk?" in twiml, twiml
    uri = twiml.split("<Sip>", 1)[1].split("</Sip>", 1)[0].replace("&amp;", "&")
    params = {k: v[0] for k, v in parse_qs(urlsplit(uri).query).items()}
    assert params["X-AI-Hops"] == "1" and params["X-AI-Queue"] == "managers"
    assert params["X-AI-Urgency"] == "high" and params["X-AI-Skill"] == "billing"
    h = gw.handoffs.store.get(params["X-AI-Handoff-Id"])
    assert h is not None and h.attempts[0].result == "transferred"
    assert "415 555" not in twiml and "[PHONE ***0199]" in params["X-AI-Summary"]
