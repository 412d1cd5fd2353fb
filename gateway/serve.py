"""`gateway serve`: the media plane (aiohttp WebSocket for mod_audio_stream) and the admin API (FastAPI
under uvicorn) in one event loop.

Why aiohttp for media: measured at 500 echo streams it used 40-51 % of a core where FastAPI/uvicorn
saturated one (research offline_voice.md §5; our own comparison: docs/bench/gateway.md). The admin API
is low-rate and wants OpenAPI docs, so it is FastAPI on its own port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import signal
import socket
import sys

import uvicorn
from aiohttp import web
from pydantic import ValidationError

from gateway import metrics as m
from gateway.call.control import ControlPlane
from gateway.call.session import CallSession
from gateway.fallback import FallbackPrompts
from gateway.log import fields, setup_logging
from gateway.profiles import ProfileError, ProfileSet, load_profiles
from gateway.proto import audio_stream as wire
from gateway.runtime import freeze_startup_heap
from gateway.settings import Settings, load_settings

log = logging.getLogger("gateway.serve")

CLOSE_HANDSHAKE_TIMEOUT_S = 1.0  # then TCP is dropped anyway (libwsc never closes TCP itself)


class Gateway:
    """Call registry + media endpoint + lifecycle. One per process."""

    def __init__(self, settings: Settings, profiles: ProfileSet | None = None,
                 fallback: FallbackPrompts | None = None) -> None:
        self.settings = settings
        self.profiles = profiles or load_profiles(settings.profiles_dir, settings.default_profile)
        self.fallback = fallback or FallbackPrompts(self.profiles, settings.fallback_voice)
        self.calls: dict[str, CallSession] = {}
        self.draining = False
        self.started = False
        self.control_plane: ControlPlane | None = None
        self.control_error: str | None = None
        self._tokens = [t.encode() for t in settings.auth_tokens]
        self._runner: web.AppRunner | None = None
        self._admin: _AdminServer | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self.media_port: int = 0
        self.admin_port: int = 0

    # ------------------------------------------------------------------ media endpoint
    def media_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/stream/{uuid}", self.handle_stream)
        return app

    def _authorized(self, request: web.Request) -> bool:
        if not self._tokens:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every token (no early exit) so timing says nothing about which one is close.
        ok = False
        for valid in self._tokens:
            ok |= hmac.compare_digest(presented, valid)
        return ok and bool(presented)

    async def handle_stream(self, request: web.Request) -> web.StreamResponse:
        uuid = request.match_info["uuid"]
        peer = request.remote
        if self.draining or not self.started:
            m.STREAMS_REFUSED.labels(reason="draining").inc()
            log.warning("stream refused: draining", extra=fields(call=uuid, peer=peer))
            return web.Response(status=503, text="gateway is draining\n")
        if not self._authorized(request):
            m.AUTH_FAILURES.inc()
            m.STREAMS_REFUSED.labels(reason="auth").inc()
            log.warning("stream refused: bad or missing token", extra=fields(call=uuid, peer=peer))
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"})
        try:
            wire.check_stream_id(uuid)
        except wire.StreamProtocolError as exc:
            m.STREAMS_REFUSED.labels(reason="bad_uuid").inc()
            log.warning("stream refused: bad uuid", extra=fields(peer=peer, reason=exc.reason))
            return web.Response(status=400, text="bad channel uuid\n")
        if uuid in self.calls:
            m.STREAMS_REFUSED.labels(reason="duplicate").inc()
            log.warning("stream refused: uuid already streaming", extra=fields(call=uuid, peer=peer))
            return web.Response(status=409, text="a stream for this uuid is live\n")
        if len(self.calls) >= self.settings.max_calls:
            m.STREAMS_REFUSED.labels(reason="capacity").inc()
            log.warning("stream refused: at capacity", extra=fields(call=uuid, calls=len(self.calls)))
            return web.Response(status=503, text="at capacity\n")
        ws = web.WebSocketResponse(
            compress=False,  # libwsc's deflate setting is unreliable (research §1.3): never negotiate it
            max_msg_size=wire.max_frame_bytes(),
            timeout=CLOSE_HANDSHAKE_TIMEOUT_S,
            autoping=True,
        )
        if not ws.can_prepare(request).ok:
            m.STREAMS_REFUSED.labels(reason="not_websocket").inc()
            return web.Response(status=400, text="expected a WebSocket upgrade\n")
        await ws.prepare(request)
        session = CallSession(
            uuid, ws, settings=self.settings, profiles=self.profiles, fallback_audio=self.fallback,
            control_plane=self.control_plane, query=dict(request.query),
        )
        self.calls[uuid] = session
        try:
            await session.run()
        finally:
            self.calls.pop(uuid, None)
            m.TRAFFIC.add_finished(session.stats)  # after leaving `calls`: counted once
        # Returning ends the handler; aiohttp then closes the transport (no keep-alive after a WebSocket).
        return ws

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        if not self._tokens:
            log.warning("no GATEWAY_AUTH_TOKENS set: media streams are NOT authenticated")
        self.control_plane = await _start_control_plane(s)
        if self.control_plane is None and s.esl_workers:
            self.control_error = "call control could not start (see log)"
        self._runner = web.AppRunner(self.media_app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=CLOSE_HANDSHAKE_TIMEOUT_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.media_host, s.media_port, reuse_address=True, backlog=1024)
        await site.start()
        self.media_port = _bound_port(self._runner)
        admin_sock = socket.socket(socket.AF_INET6 if ":" in s.admin_host else socket.AF_INET)
        admin_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        admin_sock.bind((s.admin_host, s.admin_port))
        self.admin_port = admin_sock.getsockname()[1]
        from gateway.admin import make_admin_app

        config = uvicorn.Config(make_admin_app(self), log_config=None, access_log=False, lifespan="off",
                                ws="none")
        self._admin = _AdminServer(config)
        self._admin_task = asyncio.create_task(self._admin.serve(sockets=[admin_sock]), name="admin-api")
        while not self._admin.started:  # readiness must not be announced before the admin port answers
            if self._admin_task.done():
                self._admin_task.result()
                raise OSError("admin API did not start")
            await asyncio.sleep(0.01)
        m.TRAFFIC.live = lambda: [s.stats for s in self.calls.values()]
        self.started = True
        m.READY.set(1)
        log.info("gateway listening",
                 extra=fields(media_port=self.media_port, admin_port=self.admin_port,
                              model=s.model_backend if s.model_backend != "realtime" else s.model_url,
                              call_control=self.control_plane is not None))

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Readiness false, refuse new streams, let live calls finish, end the rest after the timeout."""
        timeout = self.settings.shutdown_timeout_s if drain_timeout is None else drain_timeout
        self.draining = True
        m.READY.set(0)
        log.info("draining", extra=fields(calls=len(self.calls), timeout_s=timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.calls and loop.time() < deadline:  # noqa: ASYNC110 - calls end in many ways; poll is enough
            await asyncio.sleep(0.05)
        if self.calls:
            log.warning("ending calls still live after the drain timeout",
                        extra=fields(calls=len(self.calls)))
            for session in list(self.calls.values()):
                session.outcome = session.outcome or "shutdown"
            await asyncio.gather(*(s.close(wire.CLOSE_GOING_AWAY, "gateway shutting down")
                                   for s in list(self.calls.values())), return_exceptions=True)
            for _ in range(40):
                if not self.calls:
                    break
                await asyncio.sleep(0.05)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._admin is not None and self._admin_task is not None:
            self._admin.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin_task, 5)
        if self.control_plane is not None:
            with contextlib.suppress(Exception):
                await self.control_plane.close()
        log.info("stopped")


class _AdminServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        # `gateway serve` owns SIGTERM/SIGINT (it drains the media plane first); uvicorn must not take them.
        yield


async def _start_control_plane(s: Settings) -> ControlPlane | None:
    if not s.esl_workers:
        return None
    try:
        plane = ControlPlane.from_settings(dict(s.esl_workers), dict(s.playback_mode) or None)
        await plane.start()
    except Exception as exc:
        log.error("call control failed to start", extra=fields(error=f"{type(exc).__name__}: {exc}"))
        return None
    return plane


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gateway serve",
        description="Run the media plane and the admin API. Every option is also a GATEWAY_* environment "
        "variable (see docs/gateway.md).",
    )
    p.add_argument("--media-host")
    p.add_argument("--media-port", type=int)
    p.add_argument("--admin-host")
    p.add_argument("--admin-port", type=int)
    p.add_argument("--model-url", help="Realtime websocket base URL, e.g. ws://127.0.0.1:8092/v1")
    p.add_argument("--model-backend", choices=["realtime", "null-echo", "null-silence"])
    p.add_argument("--profiles-dir")
    p.add_argument("--log-json", action="store_true", default=None)
    return p


async def run_server(settings: Settings) -> int:
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    freeze_startup_heap()
    await stop.wait()
    await gateway.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            name = "GATEWAY_" + "_".join(str(x) for x in err["loc"]).upper()
            print(f"gateway serve: invalid setting {name}: {err['msg']}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, json_lines=settings.log_json, redact_pii=settings.log_redact_pii)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional: only faster
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(run_server(settings))
    except ProfileError as exc:
        print(f"gateway serve: bad agent profile: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway serve: cannot listen: {exc}", file=sys.stderr)
        return 1
