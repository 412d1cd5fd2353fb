"""The public media listener: one WebSocket route per ingress codec, and the adapter between an
aiohttp WebSocket and a pure `MediaCodec`.

Why aiohttp for media: measured at 500 echo streams it used 40-51 % of a core where FastAPI/uvicorn
saturated one (docs/benchmarks.md). A new ingress is a codec in `gateway/proto/` plus an entry in
`INGRESSES` below. With GATEWAY_MEDIA_STACK=raw everything up to the 101 is still aiohttp's; the socket
is then carried by `gateway/media_raw.py` instead of aiohttp's WebSocketResponse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import WSMsgType, web

from gateway import metrics as m
from gateway.call.registry import Refused
from gateway.call.session import CallSession
from gateway.call.transport import InEvent, MediaCodec, StreamEnded, StreamStart, read_start, stream_events
from gateway.log import fields, pii
from gateway.media_raw import RawWsTransport
from gateway.proto import audio_stream as wire
from gateway.proto import twilio_media as twilio
from gateway.proto.audio_stream import StreamProtocolError
from gateway.proto.twilio_media import TwilioMediaCodec

if TYPE_CHECKING:
    from gateway.serve import Gateway
    from gateway.tenants import Tenant

log = logging.getLogger("gateway.media")

CLOSE_HANDSHAKE_TIMEOUT_S = 1.0  # then TCP is dropped anyway (libwsc never closes TCP itself)


class WsTransport:
    """`MediaTransport` over an aiohttp WebSocket: moves the codec's messages, nothing else."""

    def __init__(self, ws: web.WebSocketResponse, codec: MediaCodec) -> None:
        self.ws = ws
        self.codec = codec
        self.codec_name = codec.name
        self.frame_ms = codec.frame_ms
        self.echoes_marks = codec.echoes_marks
        self._pending: list[InEvent] = []
        # Called with the call's StreamStart before the call runs; may refuse it (StreamProtocolError).
        self.on_start: Callable[[StreamStart], None] | None = None

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def _next(self, timeout: float | None = None) -> list[InEvent]:  # noqa: ASYNC109
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == WSMsgType.BINARY:
            return self.codec.feed_binary(msg.data)
        if msg.type == WSMsgType.TEXT:
            return self.codec.feed_text(msg.data)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise StreamEnded()
        if msg.type == WSMsgType.ERROR:
            exc = self.ws.exception()
            code = getattr(exc, "code", wire.CLOSE_PROTOCOL_ERROR)
            raise StreamProtocolError(int(code) if isinstance(code, int) else wire.CLOSE_PROTOCOL_ERROR,
                                      f"bad frame: {exc}")
        raise StreamProtocolError(wire.CLOSE_UNSUPPORTED_DATA, f"unexpected message type {msg.type!r}")

    async def start(self, timeout: float) -> StreamStart:  # noqa: ASYNC109 - the ingress's deadline
        start, self._pending = await read_start(self._next, self.codec, timeout)
        if self.on_start is not None:
            self.on_start(start)
        return start

    def events(self) -> AsyncIterator[InEvent]:
        pending, self._pending = self._pending, []
        return stream_events(self._next, pending)

    async def send_audio(self, audio: bytes) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(self.codec.agent_audio(audio))
        except ConnectionResetError:  # the far end dropped TCP: the receive loop ends the call
            return False
        return True

    async def _send(self, text: str | None) -> None:
        if text is not None and not self.ws.closed:
            with contextlib.suppress(ConnectionResetError):
                await self.ws.send_str(text)

    async def clear(self) -> None:
        await self._send(self.codec.clear())

    async def mark(self, name: str) -> None:
        await self._send(self.codec.mark(name))

    async def send_side_text(self, doc: dict[str, Any]) -> None:
        await self._send(self.codec.side_text(doc))

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            # aiohttp sends the close frame, waits (bounded) for the reply, and the server then drops
            # TCP: a close frame with TCP left open blocks FreeSWITCH's channel teardown.
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=reason.encode()[:120])


@dataclass(frozen=True)
class Ingress:
    path: str
    make_codec: Callable[[Gateway, web.Request], MediaCodec]  # may raise StreamProtocolError
    authorized: Callable[[Gateway, web.Request], bool]
    max_msg_size: int
    enabled: Callable[[Gateway], bool] = lambda gateway: True
    unauthorized_status: int = 401


def _freeswitch_codec(gateway: Gateway, request: web.Request) -> MediaCodec:
    return wire.AudioStreamCodec(request.match_info["uuid"], default_rate=gateway.settings.default_rate,
                                 query_rate=request.query.get("rate"))


def _bearer(gateway: Gateway, request: web.Request) -> bool:
    return _authorized([t.encode() for t in gateway.settings.auth_tokens], request)


def _twilio_signed(gateway: Gateway, request: web.Request) -> bool:
    from gateway.twilio_webhook import valid_signature

    return valid_signature(gateway.settings, request, {})


INGRESSES: list[Ingress] = [
    Ingress("/stream/{uuid}", _freeswitch_codec, _bearer, wire.max_frame_bytes()),
    Ingress("/twilio/stream", lambda gateway, request: TwilioMediaCodec(), _twilio_signed,
            twilio.MAX_MESSAGE_BYTES, enabled=lambda gateway: gateway.settings.twilio_auth_token is not None,
            unauthorized_status=403),
]


class TwilioSlot:
    """A Twilio stream's place in its tenant's inbound cap. Its URL names nothing (Twilio's <Stream url>
    takes no query), so the tenant is known at `start` (the webhook's `tenant` <Parameter>): the slot the
    webhook reserved for the CallSid becomes live, or one is taken now; a full tenant's stream is closed
    (1013) before any model session starts. Outbound calls (their tenant's max_outbound holds them) and a
    warm transfer's coach leg are not inbound calls: not counted."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tenant: Tenant | None = None

    def start(self, start: StreamStart) -> None:
        extra = start.extra
        if extra.get("direction") == "outbound" or extra.get("handoff_id"):
            return
        gw = self.gateway
        chosen = gw.profiles.select(start.profile, start.callee)
        tenant = gw.tenants.owner(tenant=str(extra.get("tenant") or "") or None, profile=chosen.name,
                                  number=start.callee or None)
        try:
            # A caller coming back from a failed warm transfer was admitted already: never refused.
            gw.tenant_admission.claim(start.call_id, tenant.name, tenant.max_inbound, tenant.metric_label,
                                      force=bool(extra.get("handoff_return")))
        except Refused as exc:
            log.warning("twilio stream refused: tenant at its inbound cap",
                        extra=fields(call=start.call_id, tenant=tenant.name, limit=tenant.max_inbound))
            raise StreamProtocolError(wire.CLOSE_TRY_AGAIN_LATER, str(exc)) from None
        self.tenant = tenant

    def release(self) -> None:
        if self.tenant is not None:
            self.gateway.tenant_admission.release(self.tenant.name, self.tenant.metric_label)
            self.tenant = None


def _authorized(tokens: list[bytes], request: web.Request) -> bool:
    if not tokens:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode() if scheme.lower() == "bearer" else b""
    # Compare against every token (no early exit) so timing says nothing about which one is close.
    ok = False
    for valid in tokens:
        ok |= hmac.compare_digest(presented, valid)
    return ok and bool(presented)


def _websocket(ingress: Ingress) -> web.WebSocketResponse:
    return web.WebSocketResponse(
        compress=False,  # libwsc's permessage-deflate handling is unreliable: never negotiate it
        max_msg_size=ingress.max_msg_size, timeout=CLOSE_HANDSHAKE_TIMEOUT_S, autoping=True)


def _upgrade_aborted(request: web.Request, key: str | None, exc: BaseException) -> web.Response:
    # The peer went away mid-upgrade: one line, not aiohttp's traceback.
    m.UPGRADES_ABORTED.labels(reason="peer_reset").inc()
    log.warning("upgrade aborted by the peer",
                extra=fields(call=key, peer=request.remote, error=type(exc).__name__))
    if request.transport is not None:
        request.transport.abort()
    # Not `ws`: aiohttp would close an unprepared WebSocket and log a traceback. Writing this
    # response to the aborted transport fails with a ConnectionError, which aiohttp ignores.
    return web.Response(status=400)


async def _run_session(gateway: Gateway, transport: WsTransport | RawWsTransport, key: str | None) -> None:
    session = CallSession(transport, settings=gateway.settings,
                          profiles=gateway.profiles, fallback_audio=gateway.fallback,
                          control_factory=gateway.control_for, records=gateway.records)
    await gateway.registry.run(key or str(id(session)), session)
    if session.start_info is not None:  # a stream that never said what call it is has no tenant
        m.TENANT_CALLS.labels(tenant=gateway.call_tenant(session).metric_label,
                              outcome=session.outcome or "completed").inc()


async def _upgrade_and_run(gateway: Gateway, ingress: Ingress, request: web.Request, codec: MediaCodec,
                           key: str | None, on_start: Callable[[StreamStart], None] | None = None
                           ) -> web.StreamResponse:
    ws = _websocket(ingress)
    if not ws.can_prepare(request).ok:
        m.STREAMS_REFUSED.labels(reason="not_websocket").inc()
        return web.Response(status=400, text="expected a WebSocket upgrade\n")
    try:
        await ws.prepare(request)
    except (ConnectionError, OSError, RuntimeError) as exc:
        return _upgrade_aborted(request, key, exc)
    transport = WsTransport(ws, codec)
    transport.on_start = on_start
    await _run_session(gateway, transport, key)
    # Returning ends the handler; aiohttp then closes the transport (no keep-alive after a
    # WebSocket).
    return ws


_RAW_CALLS: set[asyncio.Task[None]] = set()  # calls on the raw stack, running past their aiohttp handler


async def _upgrade_raw(gateway: Gateway, ingress: Ingress, request: web.Request, codec: MediaCodec,
                       key: str | None, on_start: Callable[[StreamStart], None] | None,
                       release: Callable[[], None]) -> web.StreamResponse:
    """GATEWAY_MEDIA_STACK=raw: aiohttp answers the upgrade (its checks, its 101), then the socket is
    handed to `RawWsTransport` (gateway/media_raw.py names the aiohttp internals this relies on) and
    the call runs in its own task; aiohttp's handler returns at once and never touches the socket
    again. `release` frees the call's admission when the call ends (or now, if it never runs)."""
    ws = _websocket(ingress)
    if not ws.can_prepare(request).ok:
        m.STREAMS_REFUSED.labels(reason="not_websocket").inc()
        release()
        return web.Response(status=400, text="expected a WebSocket upgrade\n")
    sock = cast(asyncio.Transport, request.transport)  # uvloop's is no asyncio.Transport subclass
    handler = request.protocol
    aiohttp_side = sock.get_protocol()  # GuardedProtocol in front of aiohttp's RequestHandler
    raw = RawWsTransport(sock, codec, ingress.max_msg_size, CLOSE_HANDSHAKE_TIMEOUT_S, call=key)
    raw.on_start = on_start
    # Bytes that came with the request head (a first frame sent without waiting for the 101) are in
    # aiohttp's tail; from now on everything arrives at `raw`, which holds it until the 101 is out.
    tail, handler._message_tail = handler._message_tail, b""
    sock.set_protocol(raw)

    def detach() -> None:
        # aiohttp lets go of the socket: with its `transport` gone first, its connection_lost (which
        # unlists the connection and ends its keep-alive timer) closes nothing, and nothing it does
        # later can read, write or close the socket.
        handler.transport = None
        aiohttp_side.connection_lost(None)

    try:
        await ws.prepare(request)
    except (ConnectionError, OSError, RuntimeError) as exc:
        response = _upgrade_aborted(request, key, exc)
        detach()
        release()
        return response
    detach()
    raw.open(tail)

    async def call() -> None:
        try:
            await _run_session(gateway, raw, key)
        except Exception:
            log.exception("call ended by an unexpected error", extra=fields(call=key))
        finally:
            release()
            if not raw.closed:  # the call ended without closing the stream (an unexpected error)
                await raw.close(wire.CLOSE_INTERNAL_ERROR, "internal error")
            raw.finish()  # TCP is dropped after the call's slots are free

    task = asyncio.create_task(call(), name=f"call-{key}")
    _RAW_CALLS.add(task)
    task.add_done_callback(_RAW_CALLS.discard)
    # aiohttp writes this to a transport it no longer has: a ConnectionError that it ignores.
    return web.Response(status=101)


def media_app(gateway: Gateway) -> web.Application:
    @web.middleware
    async def head_arrived(request: web.Request, handler: Any) -> web.StreamResponse:
        # A complete request head reached us in time: its connection is off the header deadline
        # (gateway/admission.py), whatever the route (streams, the Twilio webhook, a 404).
        gateway.header_deadline.passed(request.transport)
        return await handler(request)

    app = web.Application(client_max_size=64 * 1024, middlewares=[head_arrived])

    def handler(ingress: Ingress) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            key = request.match_info.get("uuid")
            peer = request.remote
            if not gateway.registry.accepting:
                m.STREAMS_REFUSED.labels(reason="draining").inc()
                log.warning("stream refused: draining", extra=fields(call=key, peer=peer))
                return web.Response(status=503, text="gateway is draining\n")
            if not ingress.authorized(gateway, request):
                m.AUTH_FAILURES.inc()
                m.STREAMS_REFUSED.labels(reason="auth").inc()
                log.warning("stream refused: bad or missing token", extra=fields(call=key, peer=peer))
                if ingress.unauthorized_status == 401:
                    return web.Response(status=401, text="unauthorized\n",
                                        headers={"WWW-Authenticate": "Bearer"})
                return web.Response(status=ingress.unauthorized_status, text="bad signature\n")
            try:
                codec = ingress.make_codec(gateway, request)
            except StreamProtocolError as exc:
                m.STREAMS_REFUSED.labels(reason="bad_uuid").inc()
                log.warning("stream refused: bad request", extra=fields(peer=peer, reason=exc.reason))
                return web.Response(status=400, text="bad channel uuid\n")
            # The call's tenant, when the worker said which number or profile the stream is for (the
            # stream URL's query, freeswitch-conf/scripts/ai_stream_start.lua): its own inbound cap.
            # A Twilio stream's URL names nothing: its tenant is taken at `start` (TwilioSlot).
            twilio_stream = isinstance(codec, TwilioMediaCodec)
            tenant = None if twilio_stream else gateway.stream_tenant(request)
            held_source = False
            try:
                gateway.registry.admit(key)
                gateway.admission.admit(peer or "?")  # this source's share (gateway/admission.py)
                held_source = True
                if tenant is not None:  # this tenant's share (tenants' max_inbound)
                    gateway.tenant_admission.admit(tenant.name, tenant.max_inbound, tenant.metric_label)
            except Refused as exc:
                if held_source:
                    gateway.admission.release(peer or "?")
                m.STREAMS_REFUSED.labels(reason=exc.reason).inc()
                log.warning("stream refused", extra=fields(call=key, peer=peer, reason=str(exc),
                                                           tenant=tenant.name if tenant else None))
                # A tenant at its cap is refused exactly like the gateway at its global cap: 503 before
                # the upgrade, so the worker tries the next gateway and then answers SIP 503.
                status = {"duplicate": 409, "source_rate": 429}.get(exc.reason, 503)
                return web.Response(status=status, text=f"{exc}\n",
                                    headers={"Retry-After": "1"} if status == 429 else None)
            slot = TwilioSlot(gateway) if twilio_stream else None

            def release() -> None:
                if slot is not None:
                    slot.release()
                gateway.admission.release(peer or "?")
                if tenant is not None:
                    gateway.tenant_admission.release(tenant.name, tenant.metric_label)

            on_start = slot.start if slot is not None else None
            if gateway.settings.media_stack == "raw":
                released = False

                def release_once() -> None:
                    nonlocal released
                    if not released:
                        released = True
                        release()

                try:
                    return await _upgrade_raw(gateway, ingress, request, codec, key, on_start, release_once)
                except BaseException:
                    release_once()
                    raise
            try:
                return await _upgrade_and_run(gateway, ingress, request, codec, key, on_start)
            finally:
                release()

        return handle

    # The FreeSWITCH workers probe readiness here (their Lua watchdog and per-call start): the admin API
    # usually listens on localhost only. Unauthenticated, and nothing beyond ready / not ready.
    async def readyz(request: web.Request) -> web.StreamResponse:
        ready = gateway.ready
        # Asked for one call (the workers' ai_stream_start.lua adds the stream's ?tenant=&profile=&callee=):
        # 429 when that call's tenant is at its own inbound cap. The worker then refuses the call with
        # "503 Tenant At Capacity", which the edge does not take for a failed worker (kamailio.cfg).
        tenant = gateway.stream_tenant(request) if ready else None
        if tenant is not None and gateway.tenant_admission.full(tenant.name, tenant.max_inbound):
            if "again" not in request.query:  # `again`: the worker asks why an upgrade was refused
                m.STREAMS_REFUSED.labels(reason="tenant_cap").inc()
                m.TENANT_STREAMS_REFUSED.labels(tenant=tenant.metric_label).inc()
                log.warning("stream refused before the upgrade: tenant at its inbound cap",
                            extra=fields(peer=request.remote, tenant=tenant.name, limit=tenant.max_inbound,
                                         callee=pii(request.query.get("callee", "")) or None))
            return web.Response(status=429, text="tenant at capacity\n")
        return web.Response(status=200 if ready else 503, text="ready\n" if ready else "not ready\n")

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", healthz)
    for ingress in INGRESSES:
        if ingress.enabled(gateway):
            app.router.add_get(ingress.path, handler(ingress))
    if gateway.settings.twilio_auth_token is not None:
        from gateway.twilio_webhook import voice_webhook

        async def twilio_voice(request: web.Request) -> web.StreamResponse:
            return await voice_webhook(gateway, request)

        app.router.add_post("/twilio/voice", twilio_voice)

        from gateway.twilio_webhook import handoff_events

        async def twilio_handoff(request: web.Request) -> web.StreamResponse:
            return await handoff_events(gateway, request)

        app.router.add_post("/twilio/handoff/{handoff_id}/events", twilio_handoff)
    return app
