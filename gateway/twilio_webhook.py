"""Twilio's side of the public listener: X-Twilio-Signature checks and the TwiML voice webhook.

Twilio signs every request (the voice webhook's form POST and the stream's WebSocket upgrade) with
HMAC-SHA1 over the full URL and sorted POST parameters, keyed with the account's auth token
(https://www.twilio.com/docs/usage/webhooks/webhooks-security); the official `twilio` package's
RequestValidator checks it. The webhook answers `<Connect><Stream>` (bidirectional,
https://www.twilio.com/docs/voice/twiml/stream) with the call's details as `<Parameter>`s, its tenant
among them, or `<Reject reason="busy"/>` when that tenant is at its inbound cap (`max_inbound`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from gateway import metrics as m
from gateway.call.registry import Refused
from gateway.log import fields, pii
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.serve import Gateway
    from gateway.tenants import Tenant

log = logging.getLogger("gateway.twilio")


def public_url(settings: Settings, request: web.Request, *, scheme: str | None = None) -> str:
    """The URL Twilio used (and signed): the configured public base plus the request's path."""
    base = (settings.twilio_public_url or f"{request.scheme}://{request.host}").rstrip("/")
    if scheme is not None:
        base = scheme + base[base.index("://"):]
    return base + request.rel_url.path_qs


def valid_signature(settings: Settings, request: web.Request, params: dict[str, Any]) -> bool:
    token = settings.twilio_auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if token is None or not signature:
        return False
    validator = RequestValidator(token.get_secret_value())
    url = public_url(settings, request)
    if request.method == "GET" and url.startswith("http"):  # the upgrade: Twilio signs the wss:// URL
        url = "ws" + url[4:]
    return bool(validator.validate(url, params, signature))


async def signed_form(gateway: Gateway, request: web.Request, what: str) -> dict[str, str] | web.Response:
    """The request's form when Twilio signed it, else the 403 to answer (logged and counted)."""
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    if not valid_signature(gateway.settings, request, params):
        m.AUTH_FAILURES.inc()
        log.warning(f"twilio {what} refused: bad signature", extra=fields(peer=request.remote))
        return web.Response(status=403, text="bad signature\n")
    return params


async def voice_webhook(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    params = await signed_form(gateway, request, "webhook")
    if isinstance(params, web.Response):
        return params
    call_sid, caller, called = params.get("CallSid", ""), params.get("From", ""), params.get("To", "")
    profile = gateway.profiles.select("", called)
    base = public_url(gateway.settings, request, scheme=None).removesuffix(request.rel_url.path_qs)
    stream_url = ("wss" if base.startswith("https") else "ws") + base[base.index("://"):] + "/twilio/stream"
    from gateway.handoff.twilio_warm import coach_twiml

    coach = coach_twiml(params, stream_url)  # a warm transfer's AI coach leg (gateway/handoff/twilio_warm.py)
    if coach is not None:
        return web.Response(text=coach, content_type="application/xml")
    tenant = gateway.tenants.owner(profile=profile.name, number=called or None)
    if not admitted(gateway, tenant, call_sid, called):
        busy = VoiceResponse()
        busy.reject(reason="busy")
        return web.Response(text=str(busy), content_type="application/xml")
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (("profile", profile.name), ("caller", caller), ("called", called),
                        ("callSid", call_sid), ("tenant", tenant.name)):
        stream.parameter(name=name, value=value)
    hops = params.get("SipHeader_X-AI-Hops", "")  # handed on before (a SIP domain call, X- headers)
    if hops.isdigit() and len(hops) <= 2:
        stream.parameter(name="hops", value=hops)
    response.append(connect)
    log.info("twilio call", extra=fields(call=call_sid, profile=profile.name, caller=pii(caller),
                                         callee=pii(called)))
    return web.Response(text=str(response), content_type="application/xml")


def admitted(gateway: Gateway, tenant: Tenant, call_sid: str, called: str) -> bool:
    """The tenant's inbound cap (`max_inbound`) at the webhook: a slot reserved for this CallSid until
    its stream starts (gateway/admission.py), or False when the tenant is full. The caller then hears
    busy and the call is not billed (<Reject reason="busy"/>, https://www.twilio.com/docs/voice/twiml/reject)."""
    try:
        gateway.tenant_admission.reserve(call_sid, tenant.name, tenant.max_inbound, tenant.metric_label)
    except Refused as exc:
        m.STREAMS_REFUSED.labels(reason=exc.reason).inc()
        log.warning("twilio call rejected busy: tenant at its inbound cap",
                    extra=fields(call=call_sid, tenant=tenant.name, limit=tenant.max_inbound,
                                 callee=pii(called) or None, reason=str(exc)))
        return False
    return True


async def handoff_events(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    """Conference and participant status callbacks of a Twilio warm transfer
    (gateway/handoff/twilio_warm.py), signed like every Twilio request."""
    from gateway.handoff.twilio_warm import active

    params = await signed_form(gateway, request, "handoff callback")
    if isinstance(params, web.Response):
        return params
    transfer = active(request.match_info["handoff_id"])
    if transfer is None:
        return web.Response(status=404, text="no such transfer\n")
    transfer.event(params)
    return web.Response(status=204)
