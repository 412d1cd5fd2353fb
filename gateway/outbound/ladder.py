"""The after-hours escalation ladder: page a profile's on-call people one after another until somebody
acknowledges.

Outside the profile's business hours (gateway/outbound/schedule.py) an urgent call (the agent's
`escalate` tool, or `POST /incidents`) starts a `LadderRun`:

    for each person (primary, secondary, fallbacks; a number listed twice is paged once):
        notify the person's webhook (SMS / push relay) in parallel, signed like every event
        originate a leg through the edge (gateway/outbound/service.py, purpose "ladder"); when they
        answer, the agent (the announce profile) reads the incident: what the caller said and the
        callback number, then "press 1 to acknowledge"
        DTMF 1 within the leg timeout (ring + announcement + answer; 120 s by default) = acknowledged:
        the ladder stops, records who, and bridges the person to the caller if the caller is still on
        the same worker; otherwise hang the leg up and go on to the next person

A person is never rung by two legs at once, across all runs: a second incident waits for the first
leg to that number to end. Every step (notified, dialled, result, SIP status, times) and the outcome
stay on the run (`GET /incidents/{id}`) and in the log.
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
from gateway.esl.errors import EslError
from gateway.log import fields, pii
from gateway.outbound.originate import MAX_VAR_CHARS
from gateway.outbound.pacing import normalize_number
from gateway.outbound.service import DialRequest, OutboundRefused, OutboundService
from gateway.records.analysis import WebhookSender

if TYPE_CHECKING:
    from gateway.call.registry import CallRegistry
    from gateway.outbound.schedule import OnCall, OnCallPerson
    from gateway.profiles import Profile, ProfileSet
    from gateway.settings import Settings
    from gateway.tenants import TenantSet

log = logging.getLogger("gateway.ladder")

MAX_RUNS = 1000
ACK_DIGIT = "1"

_pager: Ladders | None = None


def pager() -> Ladders | None:
    """The process's ladder service, for the `escalate` tool (set by `gateway serve`)."""
    return _pager


@dataclass
class LadderStep:
    person: str
    number: str
    leg: str | None = None
    result: str = "pending"  # acknowledged, no_answer, busy, failed, declined, timeout, skipped
    sip_status: int | None = None
    notified: bool | None = None  # the person's webhook: delivered / failed / None = none configured
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    def info(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LadderRun:
    id: str
    tenant: str
    profile: str
    summary: str
    callback: str
    call_uuid: str | None
    state: str = "paging"  # paging, acknowledged, exhausted, canceled
    acknowledged_by: str | None = None
    bridged: bool = False
    steps: list[LadderStep] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "tenant": self.tenant, "profile": self.profile, "summary": self.summary,
                "callback": self.callback, "call": self.call_uuid, "state": self.state,
                "acknowledged_by": self.acknowledged_by, "bridged": self.bridged,
                "steps": [s.info() for s in self.steps], "events": list(self.events),
                "created_at": self.created_at, "ended_at": self.ended_at}


def announcement(summary: str, callback: str) -> str:
    """What the on-call person hears. Digits spaced out so text-to-speech reads them one by one; no
    double quotes (the greeting is quoted in the model's instructions). A summary in transcript form
    ("agent: … / caller: …") is cut to the caller's own lines, and the whole text to what one originate
    variable carries (MAX_VAR_CHARS), the newest words kept."""
    lines = [part.strip() for part in summary.split(" / ")]
    callers = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("caller:")]
    said = " ".join((" ".join(callers) if callers else summary).replace('"', "'").split())
    digits = " ".join(ch for ch in callback if ch.isdigit()) or "unknown"
    head = "This is the after-hours line with an urgent call. The caller said: "
    tail = f". The callback number is {digits}. Press 1 to acknowledge."
    room = max(0, MAX_VAR_CHARS - len(head) - len(tail))
    if len(said) > room:
        said = said[len(said) - room:].split(" ", 1)[-1] if room else ""
    return f"{head}{said.rstrip('. ')}{tail}"


class Ladders:
    def __init__(self, settings: Settings, outbound: OutboundService, profiles: ProfileSet,
                 tenants: TenantSet, registry: CallRegistry | None = None, *,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.outbound = outbound
        self.profiles = profiles
        self.tenants = tenants
        self.registry = registry
        self._wall = wall
        self.runs: OrderedDict[str, LadderRun] = OrderedDict()
        self._ringing: dict[str, asyncio.Event] = {}  # normalized number -> set when its leg ends
        self._tasks: set[asyncio.Task[Any]] = set()
        self._senders: dict[str, WebhookSender] = {}

    def install(self) -> None:
        global _pager
        _pager = self

    def get(self, run_id: str) -> LadderRun | None:
        return self.runs.get(run_id)

    def after_hours(self, profile: Profile) -> bool:
        now = datetime.fromtimestamp(self._wall(), UTC)
        return profile.schedule is None or not profile.schedule.open_at(now)

    def page(self, profile_name: str, summary: str, callback: str = "", *, call_uuid: str | None = None,
             tenant: str | None = None, force: bool = False) -> LadderRun:
        profile = self.profiles.profiles.get(profile_name)
        if profile is None:
            raise OutboundRefused(404, f"no agent profile {profile_name!r}")
        owner = self.tenants.get(tenant) if tenant else self.tenants.owner(profile=profile_name)
        if tenant is not None and not owner.may_use_profile(profile_name):
            raise OutboundRefused(404, f"no agent profile {profile_name!r}")
        if profile.on_call is None:
            raise OutboundRefused(409, f"profile {profile_name} has no on_call ladder")
        if not force and not self.after_hours(profile):
            raise OutboundRefused(409, "within business hours: the ladder pages only after hours "
                                       "(force to page anyway)")
        if not callback and call_uuid and self.registry is not None:
            session = self.registry.get(call_uuid)
            if session is not None:
                callback = session.meta.caller
        run = LadderRun(id=str(uuidlib.uuid4()), tenant=owner.name, profile=profile_name,
                        summary=summary.strip()[:600], callback=callback.strip()[:33], call_uuid=call_uuid,
                        created_at=self._wall())
        self.runs[run.id] = run
        while len(self.runs) > MAX_RUNS:
            self.runs.popitem(last=False)
        self._event(run, "ladder.started", people=len(profile.on_call.people))
        log.info("on-call ladder started", extra=fields(incident=run.id, tenant=run.tenant,
                                                        profile=profile_name, call=call_uuid,
                                                        summary=pii(run.summary)))
        task = asyncio.create_task(self._walk(run, profile, profile.on_call), name=f"ladder-{run.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self._senders.values():
            await sender.close()

    # ------------------------------------------------------------------ the walk
    async def _walk(self, run: LadderRun, profile: Profile, on_call: OnCall) -> None:
        timeout = on_call.leg_timeout_s or self.settings.ladder_leg_timeout_s
        paged: set[str] = set()
        try:
            for person in on_call.people:
                number = normalize_number(person.number)
                if number in paged:
                    run.steps.append(LadderStep(person.name, person.number, result="skipped",
                                                ended_at=self._wall()))
                    self._event(run, "ladder.skipped", person=person.name, why="already paged in this run")
                    continue
                paged.add(number)
                result = await self._leg(run, person, number, timeout, on_call, profile)
                if result == "acknowledged":
                    run.state, run.acknowledged_by = "acknowledged", person.name
                    break
            else:
                run.state = "exhausted"
        except asyncio.CancelledError:
            run.state = "canceled"
            raise
        finally:
            run.ended_at = self._wall()
            self._event(run, f"ladder.{run.state}", acknowledged_by=run.acknowledged_by)
            records = self.outbound.records
            if records is not None:  # kept over a restart: GET /incidents/{id} reads it back
                try:
                    records.outcome("ladder", run.id, run.tenant, run.state, run.ended_at, run.info(),
                                    profile=run.profile)
                except Exception as exc:  # the store must never break the ladder's end
                    log.warning("incident outcome not stored", extra=fields(incident=run.id, error=str(exc)))
            log.info("on-call ladder ended", extra=fields(incident=run.id, state=run.state,
                                                          acknowledged_by=run.acknowledged_by,
                                                          legs=len(run.steps)))

    async def _leg(self, run: LadderRun, person: OnCallPerson, number: str, leg_s: float, on_call: OnCall,
                   profile: Profile) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + leg_s
        step = LadderStep(person.name, person.number, started_at=self._wall())
        run.steps.append(step)
        # Never two legs ringing one person: wait for another incident's leg to that number to end.
        while number in self._ringing:
            busy = self._ringing[number]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(busy.wait(), max(0.0, deadline - loop.time()))
            if loop.time() >= deadline:
                step.result, step.ended_at = "skipped", self._wall()
                self._event(run, "ladder.skipped", person=person.name, why="being paged by another incident")
                return step.result
        ended = self._ringing[number] = asyncio.Event()
        # The parallel notification runs to its end (its own retries are bounded), whatever the leg does.
        notify = asyncio.create_task(self._notify(run, person, step))
        self._tasks.add(notify)
        notify.add_done_callback(self._tasks.discard)
        ack = asyncio.Event()
        try:
            req = DialRequest(to=person.number, caller_id=on_call.caller_id,
                              profile=on_call.announce_profile or profile.name,
                              variables={"greeting": announcement(run.summary, run.callback),
                                         "incident": run.id},
                              tenant=run.tenant, purpose="ladder", max_attempts=1, priority=100,
                              ring_timeout_s=max(1, int(leg_s)))
            try:
                leg = self.outbound.place(req, None)
            except OutboundRefused as exc:
                step.result, step.ended_at = "failed", self._wall()
                self._event(run, "ladder.leg_failed", person=person.name, error=str(exc))
                log.warning("on-call leg refused", extra=fields(incident=run.id, person=person.name,
                                                                error=str(exc)))
                return step.result
            step.leg = leg.id
            self.outbound.on_digits(leg.id, lambda d: ack.set() if d == ACK_DIGIT else None)
            self._event(run, "ladder.leg_dialled", person=person.name, leg=leg.id)
            final = asyncio.ensure_future(self.outbound.wait_final(leg))
            waiter = asyncio.ensure_future(ack.wait())
            try:
                await asyncio.wait({final, waiter}, timeout=max(0.0, deadline - loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                final.cancel()
            step.sip_status = leg.sip_status
            if ack.is_set():
                step.result = "acknowledged"
                self._event(run, "ladder.acknowledged", person=person.name, leg=leg.id)
                if on_call.bridge_on_ack and run.call_uuid:
                    run.bridged = await self._bridge(run, leg)
                if not run.bridged:
                    await self.outbound.hangup(leg)  # the person has the callback number
            else:
                if not leg.final:
                    step.result = "timeout"
                    await self.outbound.hangup(leg)
                else:
                    step.result = "declined" if leg.state == "completed" else leg.state
                self._event(run, "ladder.leg_ended", person=person.name, result=step.result,
                            sip_status=leg.sip_status)
            m.LADDER_STEPS.labels(tenant=self.tenants.get(run.tenant).metric_label, result=step.result).inc()
            return step.result
        finally:
            step.ended_at = self._wall()
            if step.leg:
                self.outbound.on_digits(step.leg, None)
            ended.set()
            if self._ringing.get(number) is ended:
                del self._ringing[number]

    async def _bridge(self, run: LadderRun, leg: Any) -> bool:
        """Put the acknowledging person through to the caller (both leave their agent streams)."""
        plane = self.outbound._plane()
        caller = self.registry.get(run.call_uuid) if self.registry and run.call_uuid else None
        if plane is None or caller is None or leg.uuid is None:
            self._event(run, "ladder.not_bridged", why="the caller is no longer on the line")
            return False
        client = plane.clients.get(leg.worker or "")
        if client is None or caller.meta.worker != leg.worker:
            self._event(run, "ladder.not_bridged", why="the caller and the leg are on different workers")
            return False
        try:
            for uuid in (run.call_uuid, leg.uuid):
                plane.mark_moved(uuid)
                with contextlib.suppress(EslError):
                    await client.api(f"uuid_audio_stream {uuid} stop")
            await client.api(f"uuid_bridge {run.call_uuid} {leg.uuid}")
        except EslError as exc:
            self._event(run, "ladder.not_bridged", why=str(exc)[:200])
            return False
        self._event(run, "ladder.bridged", call=run.call_uuid, leg=leg.id)
        return True

    async def _notify(self, run: LadderRun, person: OnCallPerson, step: LadderStep) -> None:
        """The parallel notification of a leg (SMS / push relay), signed with the tenant's webhook secret."""
        tenant = self.tenants.get(run.tenant)
        url = person.webhook_url or tenant.webhook_url
        if not url:
            return
        if not tenant.webhook_secret:
            log.warning("on-call webhook not sent: the tenant has no webhook secret to sign it",
                        extra=fields(incident=run.id, person=person.name))
            step.notified = False
            return
        sender = self._senders.get(url)
        if sender is None:
            sender = self._senders[url] = WebhookSender(url, tenant.webhook_secret, attempts=3)
        step.notified = await sender.deliver({
            "type": "ladder.page", "call_id": run.id, "incident": run.id, "tenant": run.tenant,
            "person": person.name, "number": person.number, "summary": run.summary,
            "callback": run.callback, "at": self._wall()})
        self._event(run, "ladder.notified", person=person.name, delivered=step.notified)

    def _event(self, run: LadderRun, kind: str, **data: Any) -> None:
        run.events.append({"type": kind, "at": self._wall(), **data})
        del run.events[:-200]
        # Also into the caller's call record (the records store, when on) while the caller is on the line.
        session = self.registry.get(run.call_uuid) if self.registry is not None and run.call_uuid else None
        recorder = getattr(session, "recorder", None)
        if recorder is not None:
            recorder.event("ladder", {"incident": run.id, "type": kind, **data})
