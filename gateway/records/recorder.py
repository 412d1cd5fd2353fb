"""What one call writes, as it happens, and the process-wide `Records` service behind it.

`CallRecorder` is the call object's only way out to the store: every text it hands over is redacted by
the profile's policy first. Each method builds one op and submits it to the writer; none waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.log import fields
from gateway.records.analysis import WebhookSender, analyse
from gateway.records.memory import memory_instructions, next_memory
from gateway.records.metrics import CALLS_RECORDED
from gateway.records.policy import RecordsPolicy
from gateway.records.redact import Redactor
from gateway.records.store import DEFAULT_TENANT, RecordFilter, Store, open_store
from gateway.records.writer import RecordWriter

if TYPE_CHECKING:
    from gateway.profiles import Profile, ProfileSet
    from gateway.proto.media import StreamStart
    from gateway.settings import Settings
    from gateway.tenants import TenantSet

log = logging.getLogger("gateway.records")

MEMORY_READ_TIMEOUT_S = 0.3  # the greeting never waits longer than this for a slow store
RETENTION_EVERY_S = 3600.0


def normalise_caller(value: str) -> str:
    """'+1 (555) 010-0000', 'sip:+15550100000@carrier' and '15550100000' are one caller; a
    conversation id (Twilio's ConversationSid, CH...) is kept as it is."""
    v = value.strip()
    if v.startswith(("sip:", "sips:", "tel:")):
        v = v.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    digits = re.sub(r"[\s().-]", "", v)
    if re.fullmatch(r"\+?\d{5,16}", digits):
        return "+" + digits.lstrip("+")
    return v


class Records:
    """The record service of one gateway: store + writer + webhook + retention job."""

    def __init__(
        self,
        store: Store,
        *,
        key: bytes,
        webhook: WebhookSender | None = None,
        conversations: Any = None,
        profiles: ProfileSet | None = None,
        max_buffered: int = 100_000,
        clock: Callable[[], float] = time.time,
        tenants: TenantSet | None = None,
    ) -> None:
        self.store = store
        self.tenants = tenants  # who owns a call (gateway/tenants.py); None: everything is `default`
        self.writer = RecordWriter(store, max_buffered=max_buffered)
        self.key = key
        self.webhook = webhook
        self.conversations = conversations  # twilio_sync.ConversationSync, when turned on
        self.profiles = profiles
        self.clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retention: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, s: Settings, profiles: ProfileSet | None = None, tenants: TenantSet | None = None
    ) -> Records | None:
        if not s.records_url:
            return None
        key = s.records_key.get_secret_value().encode() if s.records_key else b""
        webhook = None
        if s.records_webhook_url:
            secret = s.records_webhook_secret.get_secret_value() if s.records_webhook_secret else ""
            webhook = WebhookSender(s.records_webhook_url, secret.encode())
        conversations = None
        if s.records_twilio_conversations and s.twilio_account_sid and s.twilio_auth_token:
            from gateway.records.twilio_sync import ConversationSync

            conversations = ConversationSync(s.twilio_account_sid, s.twilio_auth_token.get_secret_value(),
                                             s.twilio_api_base_url)
        return cls(
            open_store(s.records_url),
            key=key,
            webhook=webhook,
            conversations=conversations,
            profiles=profiles,
            max_buffered=s.records_max_buffered,
            tenants=tenants,
        )

    async def start(self, retention_every_s: float | None = RETENTION_EVERY_S) -> None:
        await self.writer.start()
        if retention_every_s:
            self._retention = asyncio.create_task(
                self._retention_loop(retention_every_s), name="records-retention"
            )

    async def close(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.writer.close()
        if self.webhook is not None:
            await self.webhook.close()
        if self.conversations is not None:
            await self.conversations.close()

    # ------------------------------------------------------------------ keys
    def caller_key(self, caller: str) -> str:
        """A pseudonymous key for a caller: numbers are never stored in clear as keys. With
        GATEWAY_RECORDS_KEY set it is an HMAC (a leaked database cannot be matched against a list of
        numbers without the key); without it a plain SHA-256."""
        norm = normalise_caller(caller)
        if not norm:
            return ""
        if self.key:
            return "k_" + hmac.new(self.key, norm.encode(), hashlib.sha256).hexdigest()[:32]
        return "h_" + hashlib.sha256(norm.encode()).hexdigest()[:32]

    # ------------------------------------------------------------------ per call
    def tenant_of(self, start: StreamStart, profile: Profile) -> str:
        """The tenant a call's records belong to: the one its metadata names, else the owner of its
        profile, else of the number it reached (TenantSet.owner, as the admin API's /calls decides)."""
        extra = start.extra if isinstance(start.extra, dict) else {}
        named = str(extra.get("tenant") or "") or None
        if self.tenants is None:
            return named or DEFAULT_TENANT
        return self.tenants.owner(tenant=named, profile=profile.name, number=start.callee).name

    def open_call(
        self, call_id: str, start: StreamStart, profile: Profile, call_clock: Callable[[], float]
    ) -> CallRecorder:
        tenant = self.tenant_of(start, profile)
        recorder = CallRecorder(self, call_id, start, profile, call_clock, tenant=tenant)
        if recorder.enabled:
            label = self.tenants.get(tenant).metric_label if self.tenants is not None else tenant
            CALLS_RECORDED.labels(tenant=label).inc()
        return recorder

    async def memory_for(self, caller_key: str, policy: RecordsPolicy, tenant: str = DEFAULT_TENANT) -> str:
        """The memory block for a call's instructions: only what this tenant remembers of the caller."""
        if policy.memory.mode == "off" or not caller_key:
            return ""
        try:
            mem = await asyncio.wait_for(
                self.writer.run_in_store(self.store.get_memory, caller_key, tenant), MEMORY_READ_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("caller memory unavailable", extra=fields(error=f"{type(exc).__name__}: {exc}"))
            return ""
        return memory_instructions(mem, policy.memory) if mem else ""

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ erasure, retention, reads
    async def forget(self, caller: str, actor: str, tenant: str | None = None) -> dict[str, int]:
        """Erase a caller; with `tenant` only that tenant's records and memory of them."""
        return dict(
            await self.writer.run_in_store(self.store.forget, self.caller_key(caller), actor, None, tenant)
        )

    async def run_retention(self, now: float | None = None) -> dict[str, dict[str, int]]:
        now = self.clock() if now is None else now
        done: dict[str, dict[str, int]] = {}
        if self.profiles is None:
            return done
        for name, p in self.profiles.profiles.items():
            days = p.records.retention_days
            if days:
                done[name] = await self.writer.run_in_store(
                    self.store.retention, name, now - days * 86400.0, "retention", now
                )
        return done

    async def _retention_loop(self, every_s: float) -> None:
        while True:
            try:
                counts = await self.run_retention()
                if any(any(c.values()) for c in counts.values()):
                    log.info("retention run", extra=fields(deleted=counts))
            except Exception as exc:
                log.error("retention run failed", extra=fields(error=str(exc)))
            await asyncio.sleep(every_s)

    async def list_records(self, f: RecordFilter) -> list[dict[str, Any]]:
        if f.caller is not None:
            f.caller = self.caller_key(f.caller)
        return list(await self.writer.run_in_store(self.store.list_records, f))

    async def get_record(self, call_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        return await self.writer.run_in_store(self.store.get_record, call_id, tenant)  # type: ignore[no-any-return]

    async def get_memory(self, caller: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        return await self.writer.run_in_store(self.store.get_memory, self.caller_key(caller), tenant)  # type: ignore[no-any-return]

    def outcome(self, kind: str, outcome_id: str, tenant: str, state: str, ended_at: float | None,
                doc: dict[str, Any], profile: str = "") -> None:
        """Keep the outcome of something done outside a call's stream (an outbound call) in the store,
        redacted by its profile's policy first; not when that profile stores no records."""
        policy = self.profiles.select(profile).records if self.profiles is not None else RecordsPolicy()
        if not policy.store:
            return
        redactor = Redactor(policy.redaction)
        clean = redactor.value(doc)
        for key in ("to", "caller_id", "callback"):
            if isinstance(doc.get(key), str):
                clean[key] = redactor.number(doc[key])
        for step, raw in zip(clean.get("steps") or [], doc.get("steps") or [], strict=False):
            if isinstance(step, dict) and isinstance(raw, dict) and isinstance(raw.get("number"), str):
                step["number"] = redactor.number(raw["number"])
        self.writer.submit("outcome", {"id": outcome_id, "kind": kind, "tenant": tenant, "state": state,
                                       "ended_at": ended_at, "doc": clean})

    async def get_outcome(
        self, outcome_id: str, tenant: str | None = None, kind: str | None = None
    ) -> dict[str, Any] | None:
        return await self.writer.run_in_store(self.store.get_outcome, outcome_id, tenant, kind)  # type: ignore[no-any-return]

    async def audit_log(self, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
        return list(await self.writer.run_in_store(self.store.audit_log, limit, tenant))


class CallRecorder:
    def __init__(
        self,
        records: Records,
        call_id: str,
        start: StreamStart,
        profile: Profile,
        call_clock: Callable[[], float],
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.records = records
        self.call_id = call_id
        self.tenant = tenant
        self.profile = profile
        self.policy: RecordsPolicy = profile.records
        self.redactor = Redactor(self.policy.redaction)
        self._clock = call_clock
        self._t0 = call_clock()
        self._seq = 0
        self.caller_key = records.caller_key(_conversation_id(start) or start.caller)
        conversation = _conversation_id(start)
        self.sync = (
            records.conversations.open(conversation, call_id)
            if records.conversations is not None and conversation.startswith("CH") and profile.records.store
            else None
        )
        self.turns: list[dict[str, Any]] = []  # redacted, for the post-call record and memory
        self.model_summary: str | None = None  # with OpenAI: the model's out-of-band summary, in clear
        self.events: list[dict[str, Any]] = []
        self.usage: dict[str, int] = {}
        self._latency_by_item: dict[str, float] = {}
        self._first_audio_ms: dict[str, float] = {}
        self.enabled = self.policy.store
        self._submit(
            "call_start",
            {
                "call_id": call_id,
                "started_at": records.clock(),
                "ingress": "",
                "profile": profile.name,
                "tenant": tenant,
                "caller": self.redactor.number(start.caller),
                "caller_key": self.caller_key,
                "callee": self.redactor.number(start.callee),
                "sip_call_id": start.sip_call_id,
                "worker": start.worker,
            },
        )

    def now_ms(self) -> float:
        return round((self._clock() - self._t0) * 1000.0, 1)

    def _submit(self, kind: str, data: dict[str, Any]) -> None:
        if self.enabled:
            self.records.writer.submit(kind, data)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ as it happens
    def agent_audio_started(self, item_id: str | None, latency_ms: float | None) -> None:
        if item_id:
            self._first_audio_ms.setdefault(item_id, self.now_ms())
            if latency_ms is not None:
                self._latency_by_item[item_id] = latency_ms

    def turn(
        self,
        role: str,
        text: str,
        *,
        item_id: str | None = None,
        start_ms: float | None = None,
        end_ms: float | None = None,
        audio_ms: float | None = None,
    ) -> str:
        """A final transcript; returns the redacted text (what logs and the far end may see). Caller
        turns carry the speech's position in the input audio; agent turns start when their first audio
        went out and last as long as the audio generated for them (`audio_ms`)."""
        clean = self.redactor.text(text)
        if role == "agent" and item_id and start_ms is None:
            start_ms = self._first_audio_ms.get(item_id)
            if start_ms is not None and audio_ms is not None and end_ms is None:
                end_ms = round(start_ms + audio_ms, 1)
        row = {
            "call_id": self.call_id,
            "seq": self._next(),
            "role": role,
            "item_id": item_id or "",
            "text": clean,
            "start_ms": start_ms,
            "end_ms": end_ms if end_ms is not None else self.now_ms(),
            "barged_in": False,
            "heard_ms": None,
            "latency_ms": self._latency_by_item.get(item_id or "") if role == "agent" else None,
        }
        self.turns.append(row)
        self._submit("turn", row | {"tenant": self.tenant})
        if self.sync is not None:
            self.sync.post(role, clean)
        return clean

    def barge_in(self, item_id: str | None, heard_ms: float) -> None:
        for t in self.turns:
            if item_id and t["item_id"] == item_id:
                t["barged_in"], t["heard_ms"] = True, heard_ms
        self.event("barge_in", {"item_id": item_id, "heard_ms": heard_ms})
        if item_id:
            self._submit("barge_in", {"call_id": self.call_id, "item_id": item_id, "heard_ms": heard_ms})

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Tool calls and results, transfers, handoffs: strings redacted."""
        clean = self.redactor.value(data)
        doc = {
            "call_id": self.call_id,
            "seq": self._next(),
            "at_ms": self.now_ms(),
            "kind": kind,
            "data": clean,
        }
        self.events.append(doc)
        self._submit("event", doc | {"tenant": self.tenant})

    def usage_from(self, response: dict[str, Any]) -> None:
        usage = response.get("usage")
        if not isinstance(usage, dict):
            return
        for k in ("input_tokens", "output_tokens", "total_tokens"):
            if isinstance(usage.get(k), int):
                self.usage[k] = self.usage.get(k, 0) + usage[k]
        for side in ("input_token_details", "output_token_details"):
            det = usage.get(side)
            if isinstance(det, dict):
                for k in ("audio_tokens", "text_tokens", "cached_tokens"):
                    if isinstance(det.get(k), int):
                        key = f"{side.split('_')[0]}_{k}"
                        self.usage[key] = self.usage.get(key, 0) + det[k]

    # ------------------------------------------------------------------ the end
    def ended(self, outcome: str, *, duration_s: float, stats: dict[str, Any]) -> None:
        self._submit(
            "call_end",
            {
                "call_id": self.call_id,
                "ended_at": self.records.clock(),
                "outcome": outcome,
                "duration_s": round(duration_s, 3),
            },
        )
        record = analyse(
            self.turns,
            self.events,
            outcome=outcome,
            duration_s=duration_s,
            stats=stats,
            usage=self.usage,
            redactor=self.redactor,
        )
        record.update({"call_id": self.call_id, "profile": self.profile.name, "tenant": self.tenant})
        record["usage"]["tenant"] = self.tenant  # cost attribution
        if self.model_summary:
            # The model read the words in clear: its summary goes through the policy like everything else.
            record["extractive_summary"] = record["summary"]
            record["summary"] = self.redactor.text(self.model_summary[:2000])
            record["analysed_by"] = "model"
        self._submit("analysis", {"call_id": self.call_id, "analysis": record})
        if self.enabled and self.policy.memory.mode == "on" and self.caller_key:
            self.records.spawn(self._remember(record), f"memory-{self.call_id}")
        if self.records.webhook is not None and self.enabled:
            self.records.spawn(self.records.webhook.deliver(record), f"webhook-{self.call_id}")
        if self.sync is not None:
            self.records.spawn(self.sync.close(), f"conversation-sync-{self.call_id}")

    async def _remember(self, record: dict[str, Any]) -> None:
        r = self.records
        try:
            prev = await r.writer.run_in_store(r.store.get_memory, self.caller_key, self.tenant)
        except Exception:
            prev = None
        mem = next_memory(prev, self.turns, record, self.policy.memory)
        r.writer.submit(
            "memory",
            {
                "tenant": self.tenant,
                "caller_key": self.caller_key,
                "profile": self.profile.name,
                "summary": mem["summary"],
                "turns": mem["turns"],
                "updated_at": r.clock(),
            },
        )


def _conversation_id(start: StreamStart) -> str:
    extra = start.extra if isinstance(start.extra, dict) else {}
    for key in ("conversation_id", "ConversationSid", "conversationSid"):
        v = extra.get(key)
        if isinstance(v, str) and v:
            return v
    return ""
