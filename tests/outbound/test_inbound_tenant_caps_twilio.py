"""Inbound admission per tenant on the Twilio ingress: a real `gateway serve` (in-process) with a tenants
file, a Realtime-protocol fake as the model, Twilio's voice webhook requests signed with the official
RequestValidator and streams opened as Twilio Media Streams opens them (gateway/client/twilio_call.py),
with the `<Parameter>`s the webhook's TwiML gave. Listeners on 127.0.8.22, ephemeral ports."""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_inbound_tenant_caps import ACME_NUMBER, GLOBEX_NUMBER, tenant_profiles
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # realtime_fake, gw_helpers
from gw_helpers import tone  # noqa: E402
from realtime_fake import fake_servers  # noqa: E402

from gateway import metrics as m  # noqa: E402
from gateway.admission import RESERVATION_S, TenantAdmission  # noqa: E402
from gateway.client.twilio_call import new_sid, place_twilio_call  # noqa: E402
from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402

HOST = "127.0.8.22"  # this helper's loopback range
TWILIO_TOKEN = "twilio-auth-token-for-tenant-caps"
ACCOUNT = "AC" + "ef" * 16
TENANTS = f"""
tenants:
  acme:
    profiles: [acme-desk]
    numbers: ["{ACME_NUMBER}"]
    max_inbound: 1
    metric_label: acme_corp
  globex:
    profiles: [globex-desk]
    numbers: ["{GLOBEX_NUMBER}"]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gateway(tmp_path: Path, clock: Clock) -> Any:
    async with fake_servers() as models:
        model = await models(greeting_ms=600, reply_ms=300, speed=6.0)
        (tmp_path / "tenants.yaml").write_text(TENANTS)
        profiles = tenant_profiles(tmp_path)
        gw = Gateway(Settings(_env_file=None, media_host=HOST, media_port=0, admin_host=HOST, admin_port=0,
                              model_url=model.url, profiles_dir=profiles,
                              tenants_file=tmp_path / "tenants.yaml", max_calls=10,
                              twilio_auth_token=TWILIO_TOKEN, twilio_account_sid=ACCOUNT,
                              shutdown_timeout_s=2.0, model_connect_timeout_s=2.0),
                     fallback=FallbackPrompts(load_profiles(profiles, "front-desk")))
        gw.tenant_admission = TenantAdmission(clock=clock)  # reservations expire on this clock only
        await gw.start()
        try:
            yield gw
        finally:
            await gw.shutdown(drain_timeout=0.5)


async def webhook(gw: Gateway, called: str, call_sid: str) -> tuple[str, dict[str, str]]:
    """Twilio's voice webhook POST for a new call; the TwiML and its <Stream>'s <Parameter>s."""
    url = f"http://{HOST}:{gw.media_port}/twilio/voice"
    form = {"CallSid": call_sid, "AccountSid": ACCOUNT, "From": "+14155550111", "To": called,
            "Direction": "inbound", "CallStatus": "ringing"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
    async with aiohttp.ClientSession() as http, http.post(
            url, data=form, headers={"X-Twilio-Signature": signature}) as r:
        assert r.status == 200
        twiml = await r.text()
    root = ET.fromstring(twiml)
    params = {p.get("name", ""): p.get("value", "") for p in root.iter("Parameter")}
    return twiml, params


async def stream(gw: Gateway, params: dict[str, str], seconds: float) -> Any:
    """The Media Stream Twilio opens for a <Connect><Stream>, with the TwiML's parameters."""
    return await place_twilio_call(
        f"ws://{HOST}:{gw.media_port}/twilio/stream", tone(0.3, 8000, lead_silence=seconds, tail_silence=0.2),
        auth_token=TWILIO_TOKEN, call_sid=params["callSid"], profile=params.get("profile", ""),
        called=params.get("called", ""), parameters=params, reply_timeout=10, quiet_s=0.5)


async def until(check: Any, what: str) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(what)


def refused(label: str) -> float:
    return m.TENANT_STREAMS_REFUSED.labels(tenant=label)._value.get()


BUSY = '<Response><Reject reason="busy" /></Response>'


async def test_a_full_tenants_next_twilio_call_is_rejected_busy_and_other_tenants_still_connect(gateway):
    gw = gateway
    before = refused("acme_corp")
    first, params = await webhook(gw, ACME_NUMBER, new_sid("CA"))
    assert "<Connect><Stream" in first and params["tenant"] == "acme" and params["profile"] == "acme-desk"
    assert gw.tenant_admission.reserved("acme") == 1  # held for its stream at the webhook
    call = asyncio.create_task(stream(gw, params, 3.0))
    await until(lambda: gw.tenant_admission.live("acme") == 1, "acme's stream never went live")
    assert gw.tenant_admission.reserved("acme") == 0  # the reservation became the live slot
    # acme is at max_inbound 1: its next caller hears busy (not billed), counted per tenant.
    second, _ = await webhook(gw, ACME_NUMBER, new_sid("CA"))
    assert second.endswith(BUSY), second
    assert refused("acme_corp") == before + 1
    # The same slot holds acme's FreeSWITCH calls: the workers' per-call readiness probe says 429.
    async with aiohttp.ClientSession() as http, http.get(
            f"http://{HOST}:{gw.media_port}/readyz?callee={ACME_NUMBER.replace('+', '%2B')}") as r:
        assert r.status == 429
    # globex (no cap of its own) is connected and its caller hears the greeting meanwhile.
    other, gparams = await webhook(gw, GLOBEX_NUMBER, new_sid("CA"))
    assert "<Connect><Stream" in other and gparams["tenant"] == "globex"
    heard = await stream(gw, gparams, 0.5)
    assert heard.errors == [] and heard.greeting_s > 0.4, heard
    done = await call
    assert done.errors == [] and done.greeting_s > 0.4, done
    # acme's call ended: its slot is free, its next call is connected and greeted.
    await until(lambda: gw.tenant_admission.live("acme") == 0, "acme's slot was not released")
    third, tparams = await webhook(gw, ACME_NUMBER, new_sid("CA"))
    assert "<Connect><Stream" in third
    again = await stream(gw, tparams, 0.5)
    assert again.errors == [] and again.greeting_s > 0.4, again
    assert gw.tenant_admission.taken("acme") == 0 and gw.tenant_admission.taken("globex") == 0


async def test_a_reservation_whose_stream_never_comes_expires_and_a_late_stream_is_refused(gateway, clock):
    gw = gateway
    before = refused("acme_corp")
    _, lost = await webhook(gw, ACME_NUMBER, new_sid("CA"))  # Twilio never opens this one's stream
    assert (await webhook(gw, ACME_NUMBER, new_sid("CA")))[0].endswith(BUSY)  # the reservation holds
    clock.now += RESERVATION_S + 1
    assert gw.tenant_admission.reserved("acme") == 0
    third, params = await webhook(gw, ACME_NUMBER, new_sid("CA"))
    assert "<Connect><Stream" in third
    # The lost call's stream turns up after all, but its slot went to the third call: refused before
    # any model session or greeting, like the webhook would (Twilio then ends that call).
    late = await stream(gw, lost, 0.3)
    assert late.close_code == 1013 and late.greeting_s == 0, late
    assert refused("acme_corp") == before + 2
    # An outbound Twilio call of acme's is held by its max_outbound, not max_inbound: it runs.
    outbound = {**params, "callSid": new_sid("CA"), "direction": "outbound"}
    out = await stream(gw, outbound, 0.3)
    assert out.errors == [] and out.greeting_s > 0.4, out
    # The third call's stream takes its reservation and is greeted.
    ok = await stream(gw, params, 0.3)
    assert ok.errors == [] and ok.greeting_s > 0.4, ok
    assert gw.tenant_admission.taken("acme") == 0
