"""Creating and delivering handoffs: one `HandoffService` per gateway process.

`create()` runs when the AI escalates: it refuses a call that has been handed on `max_hops` times
already, builds the summary (the live model's out-of-band answer, else extractive), redacts it and the
transcript by the profile's policy, keeps the handoff for the admin API (GET /handoffs/{id}) and sends
the signed webhook in the background (retries with backoff; every delivery recorded on the handoff).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.handoff import payload, summary
from gateway.handoff.record import Attempt, Delivery, Handoff, HandoffStore, new_id
from gateway.handoff.routing import Attributes, HandoffPolicy, Target, incoming_hops, sip_headers
from gateway.log import fields
from gateway.records.analysis import WebhookSender

log = logging.getLogger("gateway.handoff")


class HopLimit(Exception):
    """The call has been handed on as often as the profile allows."""


class HandoffService:
    def __init__(self, store: HandoffStore | None = None, *, webhook_secret: bytes | None = None,
                 webhook_attempts: int = 4, webhook_backoff_s: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store or HandoffStore(clock=clock)
        self.webhook_secret = webhook_secret
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff_s = webhook_backoff_s
        self._clock = clock
        self._senders: dict[str, WebhookSender] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warm: set[str] = set()  # calls with a warm transfer under way
        self._deciders: dict[str, Callable[[bool], None]] = {}  # human leg uuid -> its decision
        # The live call sessions by channel uuid (the Gateway's registry): a coach speaks through the
        # session on the human's leg.
        self.sessions: Callable[[str], Any] = lambda uuid: None

    # ------------------------------------------------------------------ summary
    async def summarize(self, call: Any, reason: str, urgency: str, timeout_s: float,
                        handoff_id: str) -> summary.Summary:
        """From the live model when the deployment uses OpenAI's model summaries (the setting the
        post-call summary uses), else extractive; the extractive one also fills what the model leaves out."""
        fallback = summary.extractive(list(call.transcript), reason=reason, urgency=urgency)
        s = call.settings
        wanted = s.records_model_summary
        if wanted is None:
            wanted = s.openai_api_key is not None
        if not wanted:
            return fallback
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()

        def done(response: dict[str, Any]) -> None:
            meta = response.get("metadata") or {}
            if meta.get("handoff_id") == handoff_id and not answer.done():
                answer.set_result(response)

        call.out_of_band[summary.HANDOFF_PURPOSE] = done
        try:
            if not call.send_to_model(summary.request(handoff_id)):
                return fallback
            response = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            log.warning("handoff summary: the model did not answer in time, extractive used",
                        extra=fields(call=call.uuid, handoff=handoff_id, timeout_s=timeout_s))
            return fallback
        finally:
            call.out_of_band.pop(summary.HANDOFF_PURPOSE, None)
        if response.get("status") != "completed":
            return fallback
        from gateway.proto import realtime as rt

        return summary.from_model(rt.response_text(response), fallback)

    # ------------------------------------------------------------------ create
    async def create(self, call: Any, policy: HandoffPolicy, *, reason: str, urgency: str,
                     mode: str | None = None) -> Handoff:
        escalated_at = self._clock()
        meta = call.meta
        hops = incoming_hops(meta.extra.get("hops"))
        if hops >= policy.max_hops:
            raise HopLimit(f"this call has already been handed on {hops} time(s); the limit is "
                           f"{policy.max_hops}")
        handoff_id = new_id()
        redactor = call.redactor
        s = await self.summarize(call, redactor.text(reason), urgency, policy.summary_timeout_s, handoff_id)
        first = policy.targets[0] if policy.targets else None
        callback = s.slots.callback_number
        h = Handoff(
            id=handoff_id, call_id=call.uuid, profile=call.profile.name if call.profile else "",
            created_at=self._clock(), hops=hops + 1, mode=mode or policy.mode, summary=s.redacted(redactor),
            attributes=attributes_for(policy, first), queue=first.queue if first else None,
            transcript=[{"role": t["role"], "text": summary.scrub(redactor, t["text"], callback)}
                        for t in call.transcript],
            caller=redactor.number(meta.caller), sip_call_id=meta.sip_call_id,
            digits=(policy.accept_digit, policy.decline_digit), escalated_at=escalated_at,
        )
        self.store.put(h)
        if call.recorder is not None:
            call.recorder.event("handoff_created", {"handoff_id": h.id, "hops": h.hops, "mode": h.mode,
                                                    "summary_source": h.summary.source})
        log.info("handoff created", extra=fields(call=call.uuid, handoff=h.id, hops=h.hops, mode=h.mode,
                                                 source=h.summary.source))
        if policy.webhook_url:
            self._spawn(self.deliver(h, policy))
        return h

    def headers(self, h: Handoff, policy: HandoffPolicy, target: Target | None) -> dict[str, str]:
        return sip_headers(handoff_id=h.id, hops=h.hops, summary=h.summary,
                           attributes=attributes_for(policy, target),
                           queue=target.queue if target else h.queue)

    def attempt(self, h: Handoff, target: str, result: str, detail: str = "",
                briefing_ms: float | None = None) -> None:
        h.attempts.append(Attempt(target=target, result=result, detail=detail[:200], at=self._clock(),
                                  briefing_ms=briefing_ms))

    # ------------------------------------------------------------------ webhook
    async def deliver(self, h: Handoff, policy: HandoffPolicy) -> Delivery | None:
        url = policy.webhook_url
        if not url:
            return None
        if self.webhook_secret is None:  # refused at start-up (Gateway); kept as a guard
            log.error("handoff webhook not sent: no secret", extra=fields(handoff=h.id))
            return None
        sender = self._senders.get(url)
        if sender is None:
            sender = WebhookSender(url, self.webhook_secret, attempts=self.webhook_attempts,
                                   backoff_s=self.webhook_backoff_s)
            self._senders[url] = sender
        build = payload.flex_task if policy.webhook_format == "flex" else payload.generic
        body = build(h, policy.last_turns)
        if policy.webhook_format == "flex":
            body = {"handoff_id": h.id, "call_id": h.call_id, "attributes": body}
        result = await sender.send(body, h.id, what="handoff")
        d = Delivery(url=url, attempts=result.attempts, ok=result.ok, status=result.status, at=self._clock())
        h.deliveries.append(d)
        log.info("handoff webhook", extra=fields(handoff=h.id, ok=d.ok, attempts=d.attempts, status=d.status))
        return d

    def _spawn(self, coro: Any) -> None:
        self.keep(asyncio.get_running_loop().create_task(coro))

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task (webhook, warm transfer) until it ends or the service closes."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def await_decision(self, leg_uuid: str, decide: Callable[[bool], None]) -> None:
        """A warm transfer's human leg waits for yes/no (DTMF, or the briefing agent's tool)."""
        self._deciders[leg_uuid] = decide

    def decision_done(self, leg_uuid: str) -> None:
        self._deciders.pop(leg_uuid, None)

    def decide(self, leg_uuid: str, accept: bool) -> bool:
        decide = self._deciders.get(leg_uuid)
        if decide is None:
            return False
        decide(accept)
        return True

    def claim(self, call_id: str) -> bool:
        if call_id in self._warm:
            return False
        self._warm.add(call_id)
        return True

    def release(self, call_id: str) -> None:
        self._warm.discard(call_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sender in self._senders.values():
            await sender.close()


def attributes_for(policy: HandoffPolicy, target: Target | None) -> Attributes:
    return target.attributes if target is not None and target.attributes is not None else policy.attributes


_SERVICE: HandoffService | None = None


def current() -> HandoffService:
    """The process's service (set by the Gateway at start-up; a default one for tools run elsewhere)."""
    global _SERVICE
    if _SERVICE is None:
        _SERVICE = HandoffService()
    return _SERVICE


def install(service: HandoffService) -> HandoffService:
    global _SERVICE
    _SERVICE = service
    return service


def install_handoffs(settings: Any, profiles: Any) -> HandoffService:
    """The process's service from the settings; a profile with a handoff webhook needs the secret
    (refused at start-up, naming the profile and the setting)."""
    secret = settings.handoff_webhook_secret
    for p in profiles.profiles.values():
        if p.handoff is not None and p.handoff.webhook_url and secret is None:
            raise ValueError(f"profile {p.name!r}: handoff.webhook_url needs GATEWAY_HANDOFF_WEBHOOK_SECRET "
                             "(deliveries are signed)")
    return install(HandoffService(webhook_secret=secret.get_secret_value().encode() if secret else None,
                                  webhook_attempts=settings.handoff_webhook_attempts,
                                  webhook_backoff_s=settings.handoff_webhook_backoff_s))
