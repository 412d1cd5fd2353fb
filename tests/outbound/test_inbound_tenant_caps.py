"""Inbound admission per tenant, at the media plane: a real `gateway serve` (in-process) with a tenants
file, a Realtime-protocol fake as the model, streams opened byte for byte as mod_audio_stream opens them
(with the query freeswitch-conf/scripts/ai_stream_start.lua adds). The same over real FreeSWITCH and
Kamailio, with what the carrier gets: tests/outbound/test_inbound_tenant_caps_sip.py."""

from __future__ import annotations

import asyncio
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # realtime_fake, gw_helpers
from gw_helpers import tone  # noqa: E402
from harness.profiles import desk_profiles  # noqa: E402
from realtime_fake import fake_servers  # noqa: E402

from gateway import metrics as m  # noqa: E402
from gateway.client.call import place_call  # noqa: E402
from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402

HOST = "127.0.8.21"  # this helper's loopback range; ephemeral ports
TOKEN = "tenant-caps-token"
ACME_NUMBER, GLOBEX_NUMBER = "+15550200", "+15550300"
TENANTS = f"""
tenants:
  acme:
    profiles: [acme-desk]
    numbers: ["{ACME_NUMBER}"]
    max_inbound: 2
    metric_label: acme_corp
    admin_tokens: "acme-prom:metrics:acme-metrics-secret-01"
  globex:
    profiles: [globex-desk]
    numbers: ["{GLOBEX_NUMBER}"]
    admin_tokens: "globex-prom:metrics:globex-metrics-secret1"
"""
OPS = "ops:control:operator-secret-000001"


def tenant_profiles(tmp: Path) -> Path:
    return desk_profiles(tmp, {"acme-desk": ACME_NUMBER, "globex-desk": GLOBEX_NUMBER})


@pytest.fixture
async def gateway(tmp_path: Path) -> Any:
    async with fake_servers() as models:
        model = await models(greeting_ms=600, reply_ms=300, speed=6.0)
        (tmp_path / "tenants.yaml").write_text(TENANTS)
        profiles = tenant_profiles(tmp_path)
        gw = Gateway(Settings(_env_file=None, media_host=HOST, media_port=0, admin_host=HOST, admin_port=0,
                              auth_tokens=TOKEN, model_url=model.url, profiles_dir=profiles,
                              tenants_file=tmp_path / "tenants.yaml", max_calls=10, admin_tokens=OPS,
                              shutdown_timeout_s=2.0, model_connect_timeout_s=2.0),
                     fallback=FallbackPrompts(load_profiles(profiles, "front-desk")))
        await gw.start()
        try:
            yield gw
        finally:
            await gw.shutdown(drain_timeout=0.5)


async def stream(gw: Gateway, callee: str, seconds: float, *, query: bool = True, extra: str = "") -> Any:
    """One call to `callee` as a worker places it: the stream URL's query names the dialled number."""
    q = f"?callee={quote(callee, safe='')}{extra}" if query else ""
    meta = {"caller": "+14155550111", "callee": callee, "call_id": "CA" + "4" * 32, "worker": "fs1",
            "profile": "", "rate": 8000}
    return await place_call(f"ws://{HOST}:{gw.media_port}/stream/{uuidlib.uuid4()}{q}",
                            tone(0.3, 8000, lead_silence=seconds, tail_silence=0.2), rate=8000,
                            metadata=meta, token=TOKEN, wait_for_greeting=True, reply_timeout=10,
                            quiet_s=0.5)


async def live(gw: Gateway, n: int) -> None:
    for _ in range(200):
        if len(gw.registry.calls) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{n} live calls expected, {len(gw.registry.calls)} seen")


async def test_a_tenant_at_its_inbound_cap_is_refused_like_the_global_cap_and_others_still_get_in(gateway):
    gw = gateway
    refused_before = m.TENANT_STREAMS_REFUSED.labels(tenant="acme_corp")._value.get()
    # acme floods: two calls hold its two slots ...
    flood = [asyncio.create_task(stream(gw, ACME_NUMBER, 4.0)) for _ in range(2)]
    await live(gw, 2)
    # ... so its third is refused before the upgrade, with the global cap's answer (503 + reason).
    third = await stream(gw, ACME_NUMBER, 0.5)
    assert third.errors and third.errors[0].startswith("upgrade refused: HTTP/1.1 503"), third.errors
    assert third.greeting_s == 0
    assert m.TENANT_STREAMS_REFUSED.labels(tenant="acme_corp")._value.get() == refused_before + 1
    # globex (no cap of its own) is answered and hears its greeting meanwhile.
    globex = await stream(gw, GLOBEX_NUMBER, 0.5)
    assert globex.errors == [] and globex.greeting_s > 0.4
    for done in await asyncio.gather(*flood):
        assert done.errors == [] and done.greeting_s > 0.4
    # acme's slots are free again once its calls ended.
    again = await stream(gw, ACME_NUMBER, 0.5)
    assert again.errors == [] and again.greeting_s > 0.4
    assert gw.tenant_admission.live("acme") == 0 and gw.tenant_admission.live("globex") == 0


async def test_a_stream_that_names_no_number_or_is_outbound_is_held_only_by_the_global_caps(gateway):
    """An older worker configuration sends no query: nothing changes for it (the Twilio ingress names its
    tenant at the webhook: test_inbound_tenant_caps_twilio.py). An outbound call's stream
    (direction=outbound) is held by the tenant's max_outbound, not max_inbound."""
    gw = gateway
    flood = [asyncio.create_task(stream(gw, ACME_NUMBER, 3.0)) for _ in range(2)]
    await live(gw, 2)
    unnamed = await stream(gw, ACME_NUMBER, 0.5, query=False)
    assert unnamed.errors == [] and unnamed.greeting_s > 0.4
    outbound = await stream(gw, ACME_NUMBER, 0.5, extra="&tenant=acme&direction=outbound")
    assert outbound.errors == [] and outbound.greeting_s > 0.4
    for done in await asyncio.gather(*flood):
        assert done.errors == []


async def scrape(gw: Gateway, token: str) -> tuple[int, dict[str, list[Any]]]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://{HOST}:{gw.admin_port}/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    if r.status != 200:
        return r.status, {}
    return r.status, {f.name: f.samples for f in text_string_to_metric_families(text)}


async def test_a_tenants_token_scrapes_only_its_own_series_and_the_operator_all(gateway):
    gw = gateway
    assert (await stream(gw, ACME_NUMBER, 0.5)).errors == []
    assert (await stream(gw, GLOBEX_NUMBER, 0.5)).errors == []
    status, acme = await scrape(gw, "acme-metrics-secret-01")
    assert status == 200 and acme, "a tenant's metrics token gets its series"
    # Every sample it gets carries its own label; nothing global, nothing of globex.
    assert {s.labels.get("tenant") for samples in acme.values() for s in samples} == {"acme_corp"}
    calls = {s.labels["outcome"]: s.value for s in acme["gateway_tenant_calls"] if s.name.endswith("_total")}
    assert sum(calls.values()) >= 1
    assert "gateway_active_calls" not in acme and "gateway_frames_in" not in acme
    status, globex = await scrape(gw, "globex-metrics-secret1")
    assert {s.labels.get("tenant") for samples in globex.values() for s in samples} == {"globex"}
    # The operator's token: every series, both tenants'.
    status, everything = await scrape(gw, OPS.rsplit(":", 1)[1])
    assert status == 200 and "gateway_active_calls" in everything
    assert {s.labels["tenant"] for s in everything["gateway_tenant_calls"]} >= {"acme_corp", "globex"}
    assert (await scrape(gw, "not-a-token-at-all-000"))[0] == 401
