"""The post-call record, built extractively from the call's redacted turns and events, and its
delivery by signed webhook.

Extractive means: every field comes from words the caller or agent said or from what the call did
(tools, outcome, timings); nothing is generated. It works offline with the embedded engine and costs
nothing per call.

Webhook signature (the scheme Stripe and Slack use; https://docs.stripe.com/webhooks#verify-manually):
  X-Gateway-Timestamp: <unix seconds>
  X-Gateway-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
A receiver recomputes the HMAC over the raw body, compares in constant time and rejects timestamps
older than a few minutes (replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.log import fields
from gateway.records import metrics as rm
from gateway.records.redact import Redactor

log = logging.getLogger("gateway.records")

INTENTS: list[tuple[str, tuple[str, ...]]] = [
    ("emergency", ("emergency", "ambulance", "chest pain", "can't breathe", "bleeding")),
    ("appointment", ("appointment", "book", "schedule", "reschedule", "booking")),
    ("cancellation", ("cancel", "cancellation", "terminate")),
    ("billing", ("bill", "invoice", "charge", "payment", "refund", "pay ")),
    ("complaint", ("complain", "complaint", "unhappy", "terrible", "not working", "broken")),
    ("order_status", ("order", "delivery", "shipment", "tracking", "package")),
    ("hours", ("opening hours", "open", "close", "hours")),
    ("speak_to_human", ("human", "agent", "person", "representative", "operator")),
    ("sales", ("price", "quote", "buy", "purchase", "interested in", "how much")),
]
POSITIVE = ("thank", "great", "perfect", "good", "wonderful", "excellent", "helpful", "appreciate", "lovely")
NEGATIVE = (
    "angry",
    "terrible",
    "awful",
    "bad",
    "unhappy",
    "frustrat",
    "annoy",
    "ridiculous",
    "worst",
    "complain",
    "useless",
    "not working",
    "broken",
)
URGENT = ("urgent", "emergency", "asap", "right away", "immediately", "as soon as possible")
_NAME = re.compile(r"\b(?:my name is|this is|i am|i'm|name's)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")
_NOT_NAMES = {"Calling", "Looking", "Trying", "Just", "Here", "Not", "Fine", "Good", "Sorry", "Interested"}
_MASKED_PHONE = re.compile(r"\[PHONE(?: \*\*\*\d{4})?\]")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 1)


def analyse(
    turns: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    outcome: str,
    duration_s: float,
    stats: dict[str, Any],
    usage: dict[str, int],
    redactor: Redactor,
) -> dict[str, Any]:
    caller_text = [t["text"] for t in turns if t["role"] == "caller" and t["text"]]
    joined = " ".join(caller_text).lower()
    intent = next(
        (name for name, words in INTENTS if any(w in joined for w in words)), "other" if joined else "none"
    )
    pos = sum(joined.count(w) for w in POSITIVE)
    neg = sum(joined.count(w) for w in NEGATIVE)
    sentiment = "positive" if pos > neg else "negative" if neg > pos else "neutral"
    name = None
    for text in caller_text:
        m = _NAME.search(text)
        if m and m.group(1).split()[0] not in _NOT_NAMES:
            name = m.group(1)
            break
    callback = next((m.group() for text in caller_text for m in [_MASKED_PHONE.search(text)] if m), None)
    urgency = "high" if any(w in joined for w in URGENT) or intent == "emergency" else "normal"
    tools = [e["data"].get("name") for e in events if e["kind"] == "tool"]
    escalated = (
        outcome in ("escalated", "transferred", "warm_transferred", "conference", "fallback_transferred")
        or "escalate" in tools
    )
    lead = 0
    if intent in ("sales", "appointment"):
        lead += 50
    if name:
        lead += 20
    if callback:
        lead += 20
    if sentiment == "positive":
        lead += 10
    latencies = [float(t["latency_ms"]) for t in turns if t.get("latency_ms") is not None]
    if not latencies:
        latencies = [float(x) for x in stats.get("reply_latencies_ms", [])]
    reason = caller_text[0] if caller_text else ""
    summary = (
        (
            f"Caller{' ' + name if name else ''} ({intent.replace('_', ' ')}): "
            f'"{reason[:160]}". Outcome: {outcome}.'
        )
        if reason
        else f"No caller speech. Outcome: {outcome}."
    )
    return {
        "summary": redactor.text(summary),
        "intent": intent,
        "sentiment": sentiment,
        "lead_score": min(lead, 100),
        "slots": {
            "name": name,
            "callback_number": callback,
            "reason": reason[:300] or None,
            "urgency": urgency,
        },
        "escalation": escalated,
        "outcome": outcome,
        "duration_s": round(duration_s, 3),
        "turns": {
            "caller": sum(1 for t in turns if t["role"] == "caller"),
            "agent": sum(1 for t in turns if t["role"] == "agent"),
        },
        "first_reply_latency_ms": latencies[0] if latencies else None,
        "reply_latency_ms": {
            "p50": _percentile(latencies, 0.5),
            "p95": _percentile(latencies, 0.95),
            "n": len(latencies),
        },
        "barge_ins": int(stats.get("barge_ins", 0)),
        "tool_calls": [
            {"name": e["data"].get("name"), "ok": e["data"].get("ok")} for e in events if e["kind"] == "tool"
        ],
        "usage": {
            "tokens": dict(usage),
            "caller_audio_s": round(float(stats.get("caller_audio_s", 0.0)), 3),
            "agent_audio_s": round(float(stats.get("agent_audio_s", 0.0)), 3),
            "tenant": stats.get("tenant") or None,
        },
        "analysed_by": "extractive",
    }


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivered:
    ok: bool
    attempts: int
    status: str


class WebhookSender:
    """POSTs each post-call record as JSON, signed; retries 5xx, 429 and network errors with backoff."""

    def __init__(
        self, url: str, secret: bytes, *, attempts: int = 4, backoff_s: float = 0.5, timeout_s: float = 5.0
    ) -> None:
        self.url = url
        self.secret = secret
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, record: dict[str, Any]) -> bool:
        return (await self.send(record, f"{record.get('call_id', '')}")).ok

    async def send(self, record: dict[str, Any], delivery_id: str, what: str = "post-call") -> Delivered:
        """POST `record`, retrying as above; the result says how many attempts and the last status
        (a handoff records it). `X-Gateway-Delivery: <delivery_id>:<attempt>` lets a receiver drop
        duplicates of a retried delivery."""
        body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        delay = self.backoff_s
        error = "not sent"
        for attempt in range(1, self.attempts + 1):
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Gateway-Timestamp": ts,
                "X-Gateway-Signature": sign(self.secret, ts, body),
                "X-Gateway-Delivery": f"{delivery_id}:{attempt}",
            }
            try:
                async with self._session.post(self.url, data=body, headers=headers) as r:
                    if 200 <= r.status < 300:
                        rm.WEBHOOK.labels(result="ok").inc()
                        return Delivered(True, attempt, f"HTTP {r.status}")
                    retry = r.status >= 500 or r.status == 429
                    error = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                retry, error = True, f"{type(exc).__name__}: {exc}"
            if not retry or attempt == self.attempts:
                rm.WEBHOOK.labels(result="failed").inc()
                log.error(
                    f"{what} webhook failed",
                    extra=fields(call=record.get("call_id"), attempts=attempt, error=error),
                )
                return Delivered(False, attempt, error)
            rm.WEBHOOK.labels(result="retry").inc()
            await asyncio.sleep(delay)
            delay *= 2
        return Delivered(False, self.attempts, error)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
