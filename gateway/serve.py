"""`gateway serve`: the composition root. The media plane (gateway/media_server.py, aiohttp) and the
admin API (gateway/admin.py, FastAPI under uvicorn: low-rate and wants OpenAPI docs, so its own port)
in one event loop, around one call registry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys

import uvicorn
from aiohttp import web
from pydantic import ValidationError

from gateway import metrics as m
from gateway import twilio_rest
from gateway.admin import make_admin_app
from gateway.admission import GuardedProtocol, HeaderDeadline, SourceAdmission, TenantAdmission
from gateway.auth import TokenAuthority
from gateway.call import model_link
from gateway.call.control import CallControl, ControlPlane
from gateway.call.policy import PolicedControl, TransferPolicy
from gateway.call.registry import CallRegistry
from gateway.call.session import CallSession
from gateway.call.transport import StreamStart
from gateway.call.twilio_control import TwilioControl
from gateway.fallback import FallbackPrompts
from gateway.handoff.service import install_handoffs
from gateway.health import ModelProbe
from gateway.log import fields, setup_logging
from gateway.media_server import CLOSE_HANDSHAKE_TIMEOUT_S, media_app
from gateway.outbound.ladder import Ladders
from gateway.outbound.service import OutboundService
from gateway.profiles import ProfileError, ProfileSet, load_profiles
from gateway.proto import audio_stream as wire
from gateway.records.recorder import Records
from gateway.runtime import count_gc_pauses, freeze_startup_heap
from gateway.settings import Settings, load_settings
from gateway.tenants import Tenant, TenantError, TenantSet

log = logging.getLogger("gateway.serve")

class Gateway:
    """Call registry + listeners + call control + lifecycle. One per process."""

    def __init__(self, settings: Settings, profiles: ProfileSet | None = None,
                 fallback: FallbackPrompts | None = None) -> None:
        # Tenants (gateway/tenants.py): without GATEWAY_TENANTS_FILE just `default`, today's settings.
        self.tenants = TenantSet.load(settings)
        if self.tenants.stream_tokens():  # each tenant's media tokens are accepted beside the install's
            settings = settings.model_copy(
                update={"auth_tokens": [*settings.auth_tokens, *self.tenants.stream_tokens()]})
        self.settings = settings
        self.profiles = profiles or load_profiles(settings.profiles_dir, settings.default_profile)
        self.fallback = fallback or FallbackPrompts(self.profiles, settings.fallback_voice)
        self.registry = CallRegistry(settings.max_calls)
        self.calls = self.registry.calls
        # None without GATEWAY_RECORDS_URL; each record carries its call's tenant
        self.records = Records.from_settings(settings, self.profiles, self.tenants)
        self.handoffs = install_handoffs(settings, self.profiles)  # gateway/handoff/
        self.handoffs.sessions = self.registry.get
        self.control_plane: ControlPlane | None = None
        self.control_error: str | None = None
        self._runner: web.AppRunner | None = None
        self._admin: _AdminServer | None = None
        self._admin_task: asyncio.Task[None] | None = None
        self.media_port: int = 0
        self.admin_port: int = 0
        self.started = False
        self.draining = False
        # Security (issue 11): per-source admission, the upgrade header deadline, model health.
        self.admission = SourceAdmission(settings.max_streams_per_source, settings.stream_rate_per_source,
                                         settings.stream_burst_per_source)
        self.header_deadline = HeaderDeadline(settings.upgrade_header_timeout_s)
        self.tenant_admission = TenantAdmission()  # per-tenant inbound caps (tenants' max_inbound)
        # Only an explicit URL is probed: with just an API key (the SDK's default endpoint) set
        # GATEWAY_MODEL_URL=wss://api.openai.com/v1 to have readiness follow OpenAI's reachability too.
        self.model_probe = ModelProbe(settings.model_url if settings.model_backend == "realtime" else None,
                                      settings.model_probe_interval_s, settings.model_probe_timeout_s)
        # Outbound calls (gateway/outbound/): originate through the workers this gateway controls.
        self.outbound = OutboundService(settings, self.tenants, self.profiles, lambda: self.control_plane,
                                        self.registry)
        if settings.twilio_account_sid and settings.twilio_auth_token and settings.outbound_twilio_stream_url:
            from gateway.outbound.twilio_originate import TwilioOriginator

            self.outbound.twilio = TwilioOriginator(
                account_sid=settings.twilio_account_sid,
                auth_token=settings.twilio_auth_token.get_secret_value(),
                stream_url=settings.outbound_twilio_stream_url,
                ring_timeout_s=settings.outbound_ring_timeout_s,
                base_url=settings.twilio_api_base_url)
        self.outbound.records = self.records  # final outcomes kept in the store (None: in memory only)
        self.ladders = Ladders(settings, self.outbound, self.profiles, self.tenants, self.registry)
        self.ladders.install()  # the `escalate` tool pages the on-call ladder after hours

    def stream_tenant(self, request: web.Request) -> Tenant | None:
        """The tenant of a stream being upgraded, from its URL's query (`tenant`, `profile`, `callee`,
        added by the workers' ai_stream_start.lua), decided as for a live call (TenantSet.owner on the
        profile the call will run); None when the request names none (the Twilio ingress, an older
        worker configuration): then only the global and per-source caps apply."""
        q = request.query
        if q.get("direction") == "outbound":  # the tenant's max_outbound slots already hold it
            return None
        named, profile, callee = (q.get(k, "")[:128] for k in ("tenant", "profile", "callee"))
        if not (named or profile or callee):
            return None
        chosen = self.profiles.select(profile, callee)
        return self.tenants.owner(tenant=named or None, profile=chosen.name, number=callee or None)

    def call_tenant(self, session: CallSession) -> Tenant:
        """The tenant of a call whose stream has started (as the admin API's /calls decides)."""
        meta = session.meta
        return self.tenants.owner(tenant=str(meta.extra.get("tenant") or "") or None,
                                  profile=session.profile.name if session.profile else None,
                                  number=meta.callee)

    @property
    def ready(self) -> bool:
        """Readiness: accepting streams, and the model answers (a call now would not just hear the
        fallback)."""
        return self.registry.accepting and self.model_probe.up

    def control_for(self, session: CallSession, start: StreamStart) -> PolicedControl | None:
        """The call's control behind the transfer policy of its profile (gateway/call/policy.py): every
        transfer, escalation and conference dial, from the model or the admin API, passes that gate."""
        control = self.make_control(session, start)
        if control is None or session.profile is None:
            return None
        return PolicedControl(control, TransferPolicy.for_profile(session.profile), start.call_id)

    def make_control(self, session: CallSession, start: StreamStart) -> CallControl | TwilioControl | None:
        """The call's control verbs: Twilio's REST API for Twilio calls, ESL for FreeSWITCH calls (None
        without ESL workers: the call then runs without transfers)."""
        s = self.settings
        if start.stream_id:  # a Twilio Media Stream
            account = s.twilio_account_sid or str(start.extra.get("account_sid") or "")
            if s.twilio_auth_token is None or not account:
                return None
            return TwilioControl(start.call_id, account_sid=account,
                                 auth_token=s.twilio_auth_token.get_secret_value(),
                                 base_url=s.twilio_api_base_url, caller_id=start.callee)
        if self.control_plane is None:
            return None
        return self.control_plane.for_call(start.call_id, start.worker or None, on_dtmf=session.on_dtmf)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        s = self.settings
        # What the first call would load (SDK modules, clients), loaded now: before freeze_startup_heap,
        # and not on a caller's time.
        if s.model_backend == "realtime":
            model_link.preload(s.api_key(), s.model_url)
        if s.twilio_auth_token is not None:
            twilio_rest.preload()
        if not s.auth_tokens:
            log.warning("no GATEWAY_AUTH_TOKENS set: media streams are NOT authenticated")
        if self.records is not None:
            try:
                await self.records.start()
            except Exception as exc:
                raise RecordsStartError(f"GATEWAY_RECORDS_URL: record store unusable: {exc}") from exc
        if not s.admin_tokens:
            log.warning("no GATEWAY_ADMIN_TOKENS set: the admin API (loopback only) is NOT authenticated")
        self.control_plane = await _start_control_plane(s)
        await self.model_probe.start()
        if self.control_plane is None and s.esl_workers:
            self.control_error = "call control could not start (see log)"
        # keepalive_timeout: after a refusal (401/429/503) a connection may idle no longer than a new one
        # may take to send its request head; mod_audio_stream never reuses a connection.
        self._runner = web.AppRunner(media_app(self), handle_signals=False, access_log=None,
                                     shutdown_timeout=CLOSE_HANDSHAKE_TIMEOUT_S,
                                     keepalive_timeout=s.upgrade_header_timeout_s)
        await self._runner.setup()
        site = _GuardedSite(self._runner, s.media_host, s.media_port, reuse_address=True, backlog=1024,
                            deadline=self.header_deadline)
        await site.start()
        self.media_port = _bound_port(self._runner)
        admin_sock = socket.socket(socket.AF_INET6 if ":" in s.admin_host else socket.AF_INET)
        admin_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        admin_sock.bind((s.admin_host, s.admin_port))
        self.admin_port = admin_sock.getsockname()[1]
        admin = make_admin_app(self.registry, lambda: self.control_error,
                               authority=TokenAuthority([*s.admin_tokens, *self.tenants.admin_tokens()]),
                               ready=lambda: self.ready, records=self.records, outbound=self.outbound,
                               tenants=self.tenants, ladders=self.ladders, handoffs=self.handoffs.store)
        config = uvicorn.Config(admin, log_config=None, access_log=False, lifespan="off",
                                ws="none")
        self._admin = _AdminServer(config)
        self._admin_task = asyncio.create_task(self._admin.serve(sockets=[admin_sock]), name="admin-api")
        while not self._admin.started:  # readiness must not be announced before the admin port answers
            if self._admin_task.done():
                self._admin_task.result()
                raise OSError("admin API did not start")
            await asyncio.sleep(0.01)
        m.TRAFFIC.live = self.registry.live_stats
        self.registry.accepting = True
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
        await self.ladders.close()
        await self.outbound.close()  # nothing new is dialled; answered calls drain below
        await self.registry.drain(timeout, wire.CLOSE_GOING_AWAY)
        await self.model_probe.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._admin is not None and self._admin_task is not None:
            self._admin.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin_task, 5)
        if self.control_plane is not None:
            with contextlib.suppress(Exception):
                await self.control_plane.close()
        await self.handoffs.close()
        await twilio_rest.close_shared()  # the calls' Twilio REST clients (gateway/twilio_rest.py)
        if self.records is not None:
            await self.records.close()  # after the calls: their last records are written first
        log.info("stopped")


class RecordsStartError(Exception):
    """The record store named by GATEWAY_RECORDS_URL cannot be opened or migrated."""


class _GuardedSite(web.TCPSite):
    """TCPSite whose connections must complete their upgrade request within the header deadline
    (gateway/admission.py). aiohttp has no such timeout, and builds its protocol itself, so the site
    wraps the protocol factory; the rest is TCPSite.start as aiohttp 3.x writes it."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, deadline: HeaderDeadline,
                 **kw: object) -> None:
        super().__init__(runner, host, port, **kw)  # type: ignore[arg-type]
        self._deadline = deadline

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: GuardedProtocol(server(), self._deadline), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class _AdminServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        # `gateway serve` owns SIGTERM/SIGINT (it drains the media plane first); uvicorn must not take them.
        yield


async def _start_control_plane(s: Settings) -> ControlPlane | None:
    if not s.esl_workers:
        return None
    try:
        plane = ControlPlane.from_settings(dict(s.esl_workers))
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
    count_gc_pauses(m.GC_PAUSE)
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
    except RecordsStartError as exc:
        print(f"gateway serve: invalid setting {exc}", file=sys.stderr)
        return 2
    except TenantError as exc:
        print(f"gateway serve: invalid setting GATEWAY_TENANTS_FILE: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gateway serve: cannot listen: {exc}", file=sys.stderr)
        return 1
