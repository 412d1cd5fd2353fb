"""Tenants from the settings and GATEWAY_TENANTS_FILE; signed progress events to a tenant's webhook."""

from __future__ import annotations

import asyncio
import hmac
import json

import pytest
from aiohttp import web

from gateway.auth import Scope, TokenAuthority
from gateway.outbound.service import DialRequest, OutboundRefused, OutboundService
from gateway.profiles import load_profiles
from gateway.records.analysis import sign
from gateway.settings import DEFAULT_PROFILES_DIR, Settings
from gateway.tenants import TenantError, TenantSet

GOOD = """
tenants:
  acme:
    profiles: [front-desk]
    numbers: ["+15550002000", 15550002001]
    admin_tokens: "acme-ops:control:acme-control-secret-0001,acme-noc:read:acme-read-secret-00001"
    stream_tokens: ["acme-stream-token-000001"]
    max_outbound: 3
    webhook_url: http://127.0.5.3:9/hook
    webhook_secret: acme-hook-secret
    metric_label: acme
    calling_hours: "09:00-17:00"
    timezone: Europe/Paris
"""


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_single_tenant_install_needs_no_configuration():
    tenants = TenantSet.load(settings(outbound_caller_ids="+15550001000"))
    assert list(tenants.tenants) == ["default"]
    d = tenants.default
    assert d.max_outbound == 5 and d.may_use_profile("anything") and d.may_present("+15550001000")
    assert not d.may_present("+15559999999")
    assert tenants.owner(profile="front-desk").name == "default"


def test_tenants_file_adds_scoped_tokens_caps_and_ownership(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(GOOD)
    tenants = TenantSet.load(settings(tenants_file=f))
    acme = tenants.tenants["acme"]
    assert acme.max_outbound == 3 and acme.numbers == {"+15550002000", "15550002001"}
    assert tenants.stream_tokens() == ["acme-stream-token-000001"]
    who = TokenAuthority(tenants.admin_tokens()).identify("Bearer acme-control-secret-0001")
    assert who is not None and who.tenant == "acme" and who.scope is Scope.CONTROL
    assert who.sees("acme") and not who.sees("default")
    assert tenants.owner(number="sip:+15550002000@edge").name == "acme"
    assert tenants.owner(tenant="acme").name == "acme"
    assert tenants.owner(tenant="nope", number="+1999").name == "default"
    assert not acme.may_use_profile("coach")


@pytest.mark.parametrize(("text", "error"), [
    ("tenants: {Acme: {profiles: [a]}}", "tenant name"),
    ("tenants: {default: {profiles: [a]}}", "tenant name"),
    ("tenants: {acme: {}}", "profiles"),
    ("tenants: {acme: {profiles: [a], admin_tokens: 'x:control:short'}}", "admin_tokens"),
    ("tenants: {acme: {profiles: [a], webhook_url: 'http://x'}}", "webhook_secret"),
    ("tenants: {acme: {profiles: [a], timezone: Mars/Base}}", "time zone"),
    ("tenants: {acme: {profiles: [a], max_outbound: 0}}", "max_outbound"),
    ("tenants: {acme: {profiles: [a], colour: blue}}", "colour"),
    ("tenants: [a, b]", "mapping"),
])
def test_a_bad_tenants_file_is_refused_naming_the_problem(tmp_path, text, error):
    f = tmp_path / "t.yaml"
    f.write_text(text)
    with pytest.raises(TenantError, match=error):
        TenantSet.load(settings(tenants_file=f))


async def test_progress_events_reach_the_tenants_webhook_signed(tmp_path):
    received: list[tuple[dict, str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        received.append((json.loads(body), request.headers["X-Gateway-Timestamp"],
                         request.headers["X-Gateway-Signature"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.5.3", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    f = tmp_path / "t.yaml"
    f.write_text(GOOD.replace("http://127.0.5.3:9/hook", f"http://127.0.5.3:{port}/hook"))
    s = settings(tenants_file=f)
    tenants = TenantSet.load(s)
    service = OutboundService(s, tenants, load_profiles(DEFAULT_PROFILES_DIR, "front-desk"),
                              control_plane=lambda: None)
    try:
        # Accepted (queued, or scheduled when outside acme's calling hours); the first event says so.
        call = service.place(DialRequest(to="+33155500100", max_attempts=1), "acme")
        assert call.state in ("queued", "scheduled")
        with pytest.raises(OutboundRefused) as refused:
            service.place(DialRequest(to="+15550100", caller_id="+15550001000"), "acme")
        assert refused.value.status == 403
        with pytest.raises(OutboundRefused) as refused:
            service.place(DialRequest(to="+15550100", profile="coach"), "acme")
        assert refused.value.status == 403
        await service.close()
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert received, "no event reached the webhook"
        event, ts, signature = received[0]
        assert event["type"] == "call.queued" and event["tenant"] == "acme" and event["id"] == call.id
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        assert hmac.compare_digest(signature, sign(b"acme-hook-secret", ts, body))
    finally:
        await service.close()
        await runner.cleanup()
