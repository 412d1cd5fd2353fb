"""Outbound calls: validate a request, queue it behind its tenant's cap, pace it at the trunk's CPS,
place it (FreeSWITCH originate through the edge, or Twilio REST), follow its progress, retry busy / no
answer with back-off, and report every step on the call object and as signed webhook events.

One `OutboundService` per gateway process. The timing decisions are gateway/outbound/pacing.py's; this
is the asyncio adapter around them (waits, tasks, ESL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway import metrics as m
from gateway.esl.errors import EslCommandError, EslError
from gateway.log import fields, pii
from gateway.outbound import originate as orig
from gateway.outbound.pacing import Backoff, CallingHours, CpsLimiter, DoNotCall, TenantSlots
from gateway.outbound.progress import OutboundCall, classify_end
from gateway.records.analysis import WebhookSender
from gateway.tenants import Tenant, TenantSet

if TYPE_CHECKING:
    from gateway.call.control import ControlPlane
    from gateway.call.registry import CallRegistry
    from gateway.esl.client import EslClient
    from gateway.outbound.twilio_originate import TwilioOriginator
    from gateway.profiles import ProfileSet
    from gateway.settings import Settings

log = logging.getLogger("gateway.outbound")

MAX_KEPT_CALLS = 10000  # finished calls kept for GET /calls/{id}; the oldest finished go first
MAX_EVENTS_PER_CALL = 64


class OutboundRefused(Exception):
    """A request the gateway will not place; `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class DialRequest:
    to: str
    caller_id: str | None = None
    profile: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    priority: int = 0
    timezone: str | None = None
    max_attempts: int | None = None
    via: str = "sip"
    tenant: str | None = None
    ring_timeout_s: int | None = None
    purpose: str = "agent"
    extra_vars: dict[str, str] = field(default_factory=dict)  # channel variables (the ladder's)


class OutboundService:
    def __init__(self, settings: Settings, tenants: TenantSet, profiles: ProfileSet,
                 control_plane: Callable[[], ControlPlane | None], registry: CallRegistry | None = None,
                 *, wall: Callable[[], float] = time.time, dnc: DoNotCall | None = None) -> None:
        self.settings = settings
        self.tenants = tenants
        self.profiles = profiles
        self._plane = control_plane
        self.registry = registry
        self._wall = wall
        self.dnc = dnc if dnc is not None else DoNotCall.from_file(settings.outbound_dnc_file)
        self.cps = CpsLimiter(settings.outbound_cps)
        self.calls: OrderedDict[str, OutboundCall] = OrderedDict()
        self.by_uuid: dict[str, str] = {}
        self._slots: dict[str, TenantSlots] = {}
        self._grants: dict[str, asyncio.Future[None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._webhooks: dict[str, WebhookSender] = {}
        self._webhook_tasks: set[asyncio.Task[Any]] = set()
        self._digit_handlers: dict[str, Callable[[str], None]] = {}
        self._rr = 0
        self.twilio: TwilioOriginator | None = None  # set when Twilio REST is configured
        self.records: Any = None  # gateway.records Records, when a store is configured: final outcomes

    # ------------------------------------------------------------------ public
    def get(self, key: str) -> OutboundCall | None:
        found = self.calls.get(key)
        if found is None and key in self.by_uuid:
            found = self.calls.get(self.by_uuid[key])
        return found

    def for_tenant(self, tenant: str | None) -> list[OutboundCall]:
        return [c for c in list(self.calls.values()) if tenant is None or c.tenant == tenant]

    def slots(self, tenant: Tenant) -> TenantSlots:
        slots = self._slots.get(tenant.name)
        if slots is None:
            slots = self._slots[tenant.name] = TenantSlots(tenant.max_outbound, tenant.queue_max_wait_s)
        return slots

    def place(self, req: DialRequest, principal_tenant: str | None) -> OutboundCall:
        """Validate and queue one call; raises OutboundRefused. The call runs in its own task."""
        s = self.settings
        if principal_tenant is not None and req.tenant not in (None, principal_tenant):
            raise OutboundRefused(403, "a tenant token places calls for its own tenant only")
        tenant = self.tenants.get(principal_tenant or req.tenant)
        if req.tenant and principal_tenant is None and req.tenant not in self.tenants.tenants:
            raise OutboundRefused(400, f"no tenant {req.tenant!r}")
        to = req.to.strip()
        try:
            orig.check(orig.NUMBER, to, "number")
        except orig.OriginateError as exc:
            raise OutboundRefused(400, str(exc)) from None
        if self.dnc.blocks(to):
            m.OUTBOUND_CALLS.labels(tenant=tenant.metric_label, result="dnc").inc()
            log.warning("outbound call refused: do-not-call list",
                        extra=fields(tenant=tenant.name, to=pii(to)))
            raise OutboundRefused(403, "the number is on the do-not-call list")
        profile_name = req.profile or self._default_profile(tenant)
        if profile_name not in self.profiles.profiles:
            raise OutboundRefused(400, f"no agent profile {profile_name!r}")
        if not tenant.may_use_profile(profile_name):
            raise OutboundRefused(403, f"profile {profile_name!r} is not one of tenant {tenant.name}'s")
        default_cid = s.outbound_caller_ids[0] if s.outbound_caller_ids else ""
        caller_id = (req.caller_id or (sorted(tenant.numbers)[0] if tenant.numbers else default_cid)).strip()
        if not caller_id:
            raise OutboundRefused(400, "no caller ID: set caller_id, or the tenant's numbers "
                                       "(GATEWAY_OUTBOUND_CALLER_IDS for the default tenant)")
        if not tenant.may_present(caller_id, default_cid):
            raise OutboundRefused(403, f"caller ID {caller_id} is not a number of tenant {tenant.name}")
        try:
            orig.check(orig.CALLER_ID, caller_id, "caller ID")
            orig.encode_vars(req.variables)
        except orig.OriginateError as exc:
            raise OutboundRefused(400, str(exc)) from None
        if req.via not in ("sip", "twilio"):
            raise OutboundRefused(400, "via must be sip or twilio")
        if req.via == "twilio" and self.twilio is None:
            raise OutboundRefused(503, "Twilio calls need GATEWAY_TWILIO_ACCOUNT_SID, "
                                       "GATEWAY_TWILIO_AUTH_TOKEN and GATEWAY_OUTBOUND_TWILIO_STREAM_URL")
        if req.via == "twilio" and len(orig.encode_vars(req.variables)) > 256:
            # Twilio's <Parameter> values reach the stream's `start` message; the codec takes 256 characters
            raise OutboundRefused(400, "a Twilio call carries at most 256 characters of encoded variables")
        try:
            hours = CallingHours.parse(tenant.calling_hours, req.timezone or tenant.timezone)
        except ValueError as exc:
            raise OutboundRefused(400, str(exc)) from None
        call = OutboundCall(
            id=str(uuidlib.uuid4()), tenant=tenant.name, to=to, caller_id=caller_id, profile=profile_name,
            via=req.via, priority=max(-100, min(100, req.priority)), variables=dict(req.variables),
            timezone=str(hours.tz), purpose=req.purpose,
            max_attempts=req.max_attempts or (1 + s.outbound_retry_attempts), created_at=self._wall())
        self._keep(call)
        self._emit(call, "queued")
        task = asyncio.create_task(self._run(call, tenant, hours, req), name=f"outbound-{call.id}")
        self._tasks[call.id] = task
        task.add_done_callback(lambda t, cid=call.id: self._tasks.pop(cid, None))
        return call

    async def hangup(self, call: OutboundCall) -> None:
        """End an outbound call whatever its state: dequeue it, cancel the ringing, or hang it up."""
        if call.final:
            return
        if call.state in ("queued", "scheduled"):
            task = self._tasks.get(call.id)
            if task is not None:
                task.cancel()
            return
        if call.via == "twilio" and self.twilio is not None:
            await self.twilio.hangup(call)
            return
        client = self._client_for(call.worker)
        if client is not None and call.uuid:
            with contextlib.suppress(EslError):
                cause = "NORMAL_CLEARING" if call.answered_at else "ORIGINATOR_CANCEL"
                await client.api(f"uuid_kill {call.uuid} {cause}")

    def on_digits(self, call_id: str, handler: Callable[[str], None] | None) -> None:
        if handler is None:
            self._digit_handlers.pop(call_id, None)
        else:
            self._digit_handlers[call_id] = handler

    async def wait_final(self, call: OutboundCall, timeout: float | None = None) -> str:  # noqa: ASYNC109
        task = self._tasks.get(call.id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        return call.state

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._webhook_tasks:  # the last events (canceled, ...) still go out, briefly
            await asyncio.wait(list(self._webhook_tasks), timeout=5)
        for sender in self._webhooks.values():
            await sender.close()
        self._webhooks.clear()
        if self.twilio is not None:
            await self.twilio.close()

    # ------------------------------------------------------------------ the call's life
    async def _run(self, call: OutboundCall, tenant: Tenant, hours: CallingHours, req: DialRequest) -> None:
        s = self.settings
        backoff = Backoff(max(0, call.max_attempts - 1), s.outbound_retry_backoff_s)
        ring = req.ring_timeout_s or s.outbound_ring_timeout_s
        try:
            while True:
                await self._calling_window(call, hours)
                if not await self._acquire(call, tenant):
                    self._finish(call, tenant, "refused", reason="queue_timeout: no free slot within "
                                 f"{tenant.queue_max_wait_s:g} s (tenant cap {tenant.max_outbound})")
                    return
                try:
                    loop = asyncio.get_running_loop()
                    at = self.cps.reserve(loop.time())
                    if at > loop.time():
                        await asyncio.sleep(at - loop.time())
                    call.attempt += 1
                    if call.via == "twilio" and self.twilio is not None:
                        state = await self._try_twilio(call)
                    else:
                        state = await self._try_sip(call, ring, req.extra_vars)
                finally:
                    self._release(call, tenant)
                delay = backoff.delay(call.attempt, state)
                if delay is None:
                    self._finish(call, tenant, state)
                    return
                call.state = "scheduled"
                call.not_before = self._wall() + delay
                self._emit(call, "retry_scheduled", after=state, delay_s=delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not call.final and call.answered_at is not None:
                self._finish(call, tenant, "completed", reason="no longer followed: gateway shutting down")
            elif not call.final:
                self._finish(call, tenant, "canceled", reason="canceled before it was answered")
            raise
        except Exception as exc:  # a bug must not leave a call queued for ever
            log.exception("outbound call failed", extra=fields(call=call.id))
            self._finish(call, tenant, "failed", reason=f"{type(exc).__name__}: {exc}")

    async def _calling_window(self, call: OutboundCall, hours: CallingHours) -> None:
        now = datetime.fromtimestamp(self._wall(), UTC)
        opening = hours.next_open(now)
        if opening > now:
            call.state = "scheduled"
            call.not_before = opening.timestamp()
            self._emit(call, "scheduled", reason="outside calling hours",
                       opens_at=opening.isoformat())
            await asyncio.sleep((opening - now).total_seconds())

    async def _acquire(self, call: OutboundCall, tenant: Tenant) -> bool:
        slots = self.slots(tenant)
        loop = asyncio.get_running_loop()
        if slots.request(call.id, call.priority):
            m.OUTBOUND_ACTIVE.labels(tenant=tenant.metric_label).set(len(slots.active))
            return True
        call.state = "queued"
        self._emit(call, "waiting", position=slots.waiting.index(call.id) + 1,
                   active=len(slots.active), cap=slots.cap)
        grant: asyncio.Future[None] = loop.create_future()
        self._grants[call.id] = grant
        try:
            await asyncio.wait_for(grant, slots.max_wait)
            m.OUTBOUND_ACTIVE.labels(tenant=tenant.metric_label).set(len(slots.active))
            return True
        except TimeoutError:
            slots.cancel(call.id)
            if call.id in slots.active:  # granted in the same instant as the timeout
                return True
            return False
        except asyncio.CancelledError:
            slots.cancel(call.id)
            if call.id in slots.active:
                self._release(call, tenant)
            raise
        finally:
            self._grants.pop(call.id, None)

    def _release(self, call: OutboundCall, tenant: Tenant) -> None:
        for key in self.slots(tenant).release(call.id):
            grant = self._grants.get(key)
            if grant is not None and not grant.done():
                grant.set_result(None)
        m.OUTBOUND_ACTIVE.labels(tenant=tenant.metric_label).set(len(self.slots(tenant).active))

    def _pick_worker(self) -> tuple[str, EslClient] | None:
        """A connected worker, the one with the fewest outbound calls of this gateway up (round robin on
        ties): the gateway's own view of its workers, as GATEWAY_ESL_WORKERS lists them."""
        plane = self._plane()
        if plane is None:
            return None
        connected = [(w, c) for w, c in plane.clients.items() if c.connected]
        if not connected:
            return None
        load = {w: 0 for w, _ in connected}
        for c in self.calls.values():
            if not c.final and c.worker in load:
                load[c.worker] += 1
        self._rr += 1
        order = sorted(range(len(connected)),
                       key=lambda i: (load[connected[i][0]], (i - self._rr) % len(connected)))
        return connected[order[0]]

    def _client_for(self, worker: str | None) -> EslClient | None:
        plane = self._plane()
        if plane is None or worker is None:
            return None
        return plane.clients.get(worker)

    async def _try_sip(self, call: OutboundCall, ring_s: int, extra_vars: dict[str, str]) -> str:
        picked = self._pick_worker()
        if picked is None:
            call.reason = "no FreeSWITCH worker connected (GATEWAY_ESL_WORKERS)"
            return "failed"
        worker, client = picked
        uuid = call.id if call.attempt == 1 else str(uuidlib.uuid4())
        call.uuid, call.worker = uuid, worker
        call.sip_status = call.hangup_cause = None
        self.by_uuid[uuid] = call.id
        watch = orig.ChannelWatch(client, uuid, lambda state: self._progress(call, state))
        watch.on_digit = lambda d: self._digit(call, d)
        try:
            cmd = orig.originate_command(
                uuid=uuid, to=call.to, caller_id=call.caller_id, profile=call.profile, tenant=call.tenant,
                outbound_id=call.id, ring_timeout_s=ring_s, variables=call.variables,
                sip_gateway=self.settings.outbound_sip_gateway, extra_vars=extra_vars)
            call.state = "dialing"
            self._emit(call, "dialing", worker=worker)
            log.info("originate", extra=fields(call=call.id, uuid=uuid, worker=worker, tenant=call.tenant,
                                               to=pii(call.to), attempt=call.attempt))
            error_cause = None
            try:
                await client.bgapi(cmd, timeout=ring_s + 30)
            except EslCommandError as exc:
                error_cause = (exc.reason.split() or ["UNKNOWN"])[0]
            except EslError as exc:
                error_cause = None
                call.reason = f"FreeSWITCH worker {worker}: {exc}"
            if watch.answered:
                await self._until_hangup(client, watch)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.ended.wait(), 3)
            call.hangup_cause = watch.hangup_cause or error_cause
            call.sip_status = watch.sip_status
            state = classify_end(call.hangup_cause, call.sip_status, watch.answered)
            if watch.answered and call.hangup_cause == "NORMAL_TEMPORARY_FAILURE":
                # ai-stream-check (freeswitch-conf) ends an answered call so when no gateway took its stream
                state, call.reason = "failed", "answered, but no gateway took the agent's audio stream"
            if state != "completed":
                self._emit(call, "attempt_ended", result=state)
            return state
        finally:
            watch.cancel()

    async def _until_hangup(self, client: EslClient, watch: orig.ChannelWatch) -> None:
        """Wait for the channel to end; if events stop (ESL reconnect) ask the worker now and then."""
        while not watch.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.ended.wait(), 15)
                return
            try:
                exists = await client.api(f"uuid_exists {watch.uuid}")
            except EslError:
                continue
            if exists.strip() == "false":
                return

    async def _try_twilio(self, call: OutboundCall) -> str:
        assert self.twilio is not None
        call.state = "dialing"
        self._emit(call, "dialing", via="twilio")
        self.twilio.on_progress = self._progress
        state = await self.twilio(call)
        if call.uuid:
            self.by_uuid[call.uuid] = call.id
        return state

    # ------------------------------------------------------------------ progress and events
    def _progress(self, call: OutboundCall, state: str) -> None:
        if state == "answered":
            call.answered_at = self._wall()
        if call.state != state:
            call.state = state
            self._emit(call, state)

    def _digit(self, call: OutboundCall, digit: str) -> None:
        handler = self._digit_handlers.get(call.id)
        if handler is not None:
            handler(digit)

    def _finish(self, call: OutboundCall, tenant: Tenant, state: str, reason: str | None = None) -> None:
        call.state = state
        call.reason = reason or call.reason
        call.ended_at = self._wall()
        call.not_before = None
        m.OUTBOUND_CALLS.labels(tenant=tenant.metric_label, result=state).inc()
        self._emit(call, state, reason=call.reason)
        if self.records is not None:  # kept over a restart (GET /calls/{id} reads it back)
            try:
                self.records.outcome("outbound", call.id, call.tenant, state, call.ended_at, call.info(),
                                     profile=call.profile)
            except Exception as exc:  # the store must never break the call's end
                log.warning("outbound outcome not stored", extra=fields(call=call.id, error=str(exc)))
        log.info("outbound call ended", extra=fields(call=call.id, tenant=call.tenant, state=state,
                                                     sip_status=call.sip_status, cause=call.hangup_cause,
                                                     attempts=call.attempt, reason=call.reason))

    def _emit(self, call: OutboundCall, kind: str, **data: Any) -> None:
        event = {"type": f"call.{kind}", "id": call.id, "tenant": call.tenant, "at": self._wall(),
                 "state": call.state, "attempt": call.attempt, "uuid": call.uuid,
                 "sip_status": call.sip_status, "hangup_cause": call.hangup_cause, **data}
        call.events.append(event)
        del call.events[:-MAX_EVENTS_PER_CALL]
        sender = self._webhook(call.tenant)
        if sender is not None:
            record = {**event, "call_id": call.id, "to": call.to, "profile": call.profile,
                      "purpose": call.purpose}
            task = asyncio.get_running_loop().create_task(sender.deliver(record))
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)

    def _webhook(self, tenant_name: str) -> WebhookSender | None:
        tenant = self.tenants.get(tenant_name)
        if not tenant.webhook_url or not tenant.webhook_secret:
            return None
        sender = self._webhooks.get(tenant.name)
        if sender is None:
            sender = self._webhooks[tenant.name] = WebhookSender(tenant.webhook_url, tenant.webhook_secret,
                                                                 attempts=3)
        return sender

    def _keep(self, call: OutboundCall) -> None:
        self.calls[call.id] = call
        if len(self.calls) > MAX_KEPT_CALLS:
            for key in [k for k, c in self.calls.items() if c.final][: len(self.calls) - MAX_KEPT_CALLS]:
                old = self.calls.pop(key)
                for u in [u for u, cid in self.by_uuid.items() if cid == old.id]:
                    del self.by_uuid[u]

    def _default_profile(self, tenant: Tenant) -> str:
        if tenant.profiles:
            return sorted(tenant.profiles)[0]
        return self.profiles.default
