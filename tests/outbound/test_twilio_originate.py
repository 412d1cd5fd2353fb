"""Outbound calls through Twilio's REST API (calls.create with <Connect><Stream>), against the local fake
speaking Twilio's documented Call resource: what Twilio receives, and the progress it reports."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fakes.twilio_rest import FakeTwilioRest  # noqa: E402

from gateway.outbound.originate import decode_vars  # noqa: E402
from gateway.outbound.service import DialRequest, OutboundRefused, OutboundService  # noqa: E402
from gateway.outbound.twilio_originate import TwilioOriginator  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.settings import DEFAULT_PROFILES_DIR, Settings  # noqa: E402
from gateway.tenants import TenantSet  # noqa: E402

ACCOUNT, TOKEN = "AC" + "a" * 32, "twilio-auth-token-for-tests"
STREAM = "wss://gateway.example/twilio/stream"


@pytest.fixture
async def twilio(request):
    fake = await FakeTwilioRest(ACCOUNT, TOKEN, host="127.0.5.5").start()
    settings = Settings(_env_file=None, outbound_caller_ids="+15550001000", outbound_cps=50,
                        **getattr(request, "param", {}))
    service = OutboundService(settings, TenantSet.load(settings),
                              load_profiles(DEFAULT_PROFILES_DIR, "front-desk"), control_plane=lambda: None)
    service.twilio = TwilioOriginator(account_sid=ACCOUNT, auth_token=TOKEN, stream_url=STREAM,
                                      ring_timeout_s=25, base_url=fake.base_url, poll_s=0.05)
    try:
        yield fake, service
    finally:
        await service.close()
        await fake.close()


async def test_twilio_call_connects_its_stream_and_reports_progress(twilio):
    fake, service = twilio
    call = service.place(DialRequest(to="+15550600", via="twilio", variables={"customer": "Ada"}), None)
    assert await service.wait_final(call, 10) == "completed"
    create = next(r for r in fake.requests if r.path.endswith("/Calls.json"))
    assert create.form["To"] == "+15550600" and create.form["From"] == "+15550001000"
    assert create.form["Timeout"] == "25"
    stream = ElementTree.fromstring(create.form["Twiml"]).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == STREAM
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["profile"] == "front-desk" and params["caller"] == "+15550600"
    assert params["direction"] == "outbound" and params["tenant"] == "default"
    assert decode_vars(params["vars"]) == {"customer": "Ada"}
    assert call.uuid and call.uuid.startswith("CA") and service.get(call.uuid) is call
    kinds = [e["type"] for e in call.events]
    assert kinds == ["call.queued", "call.dialing", "call.ringing", "call.answered", "call.completed"], kinds


@pytest.mark.parametrize(("script", "state"), [(["ringing", "busy"], "busy"),
                                               (["ringing", "no-answer"], "no_answer"),
                                               (["failed"], "failed")])
async def test_twilio_outcomes(twilio, script, state):
    fake, service = twilio
    fake.scripts["+15550601"] = script
    call = service.place(DialRequest(to="+15550601", via="twilio"), None)
    assert await service.wait_final(call, 10) == state
    assert call.hangup_cause == script[-1]


async def test_hanging_up_a_ringing_twilio_call_cancels_it(twilio):
    fake, service = twilio
    fake.scripts["+15550602"] = ["ringing"] * 1000
    call = service.place(DialRequest(to="+15550602", via="twilio"), None)
    for _ in range(100):
        if call.state == "ringing":
            break
        await asyncio.sleep(0.02)
    await service.hangup(call)
    assert await service.wait_final(call, 10) == "canceled"
    update = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"/Calls/{call.uuid}.json")]
    assert update and update[0].form["Status"] == "canceled"


async def test_twilio_variables_beyond_what_a_parameter_holds_are_refused(twilio):
    _, service = twilio
    with pytest.raises(OutboundRefused):
        service.place(DialRequest(to="+15550603", via="twilio", variables={"note": "x" * 250}), None)


@pytest.mark.parametrize("twilio", [{"outbound_max_concurrent": 1, "outbound_queue_max_wait_s": 0.5}],
                         indirect=True)
async def test_a_call_that_waits_longer_than_the_maximum_is_refused(twilio):
    fake, service = twilio
    fake.scripts["+15550610"] = ["ringing"] * 10000
    first = service.place(DialRequest(to="+15550610", via="twilio"), None)
    second = service.place(DialRequest(to="+15550611", via="twilio"), None)
    assert await service.wait_final(second, 5) == "refused"
    assert "queue_timeout" in (second.reason or "")
    assert first.state == "ringing"
    assert [r.form["To"] for r in fake.requests if r.path.endswith("/Calls.json")] == ["+15550610"]
    await service.hangup(first)


@pytest.mark.parametrize("twilio", [{"outbound_max_concurrent": 1}], indirect=True)
async def test_when_a_slot_frees_the_highest_priority_goes_next(twilio):
    fake, service = twilio
    fake.scripts["+15550620"] = ["ringing"] * 10000
    first = service.place(DialRequest(to="+15550620", via="twilio"), None)
    low = service.place(DialRequest(to="+15550621", via="twilio", priority=0), None)
    high = service.place(DialRequest(to="+15550622", via="twilio", priority=10), None)
    for _ in range(100):
        if first.state == "ringing":
            break
        await asyncio.sleep(0.02)
    assert low.state == high.state == "queued"
    await service.hangup(first)
    assert await service.wait_final(high, 5) == "completed"
    assert await service.wait_final(low, 5) == "completed"
    dialled = [r.form["To"] for r in fake.requests if r.path.endswith("/Calls.json")]
    assert dialled == ["+15550620", "+15550622", "+15550621"], dialled
