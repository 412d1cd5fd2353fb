"""One handoff as the human side sees it, and the gateway's bounded store of recent ones.

A handoff is created when the AI escalates; its id travels in the INVITE (X-AI-Handoff-Id) and in the
webhook, and the human's desktop fetches the whole record (summary, attributes, the redacted
transcript, which targets were tried and how, the webhook deliveries) at `GET /handoffs/{id}`.
Everything in it was redacted by the profile's policy before it was stored here.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.handoff.routing import Attributes
from gateway.handoff.summary import Summary


def new_id() -> str:
    """Unguessable (a desktop may fetch by it) and short enough for a SIP header: 'ho_' + 22 chars."""
    return "ho_" + secrets.token_urlsafe(16)


@dataclass
class Attempt:
    target: str  # the profile's target name (never the dialled address: that may be a person's number)
    result: str  # accepted | declined | no_answer | busy | failed | transferred
    detail: str = ""
    at: float = 0.0
    briefing_ms: float | None = None  # escalate -> the human hears the briefing (warm transfer)


@dataclass
class Delivery:
    url: str
    attempts: int
    ok: bool
    status: str  # "HTTP 200", "HTTP 503", "ClientConnectorError: ..."
    at: float


@dataclass
class Handoff:
    id: str
    call_id: str
    profile: str
    created_at: float
    hops: int
    mode: str
    summary: Summary
    attributes: Attributes
    queue: str | None
    transcript: list[dict[str, str]]  # redacted, in order
    caller: str = ""  # as the profile's policy shows numbers (masked when redaction covers phones)
    sip_call_id: str = ""
    state: str = "pending"  # pending | ringing | briefing | accepted | failed | transferred
    attempts: list[Attempt] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)  # the note-taker's transcript, redacted
    escalated_at: float = 0.0  # when the AI escalated (before the summary was built), wall clock
    digits: tuple[str, str] = ("1", "2")  # accept, decline (the profile's handoff.accept/decline_digit)

    def last_turns(self, n: int) -> list[dict[str, str]]:
        return self.transcript[-n:] if n > 0 else []

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attributes"] = self.attributes.model_dump()
        return d


class HandoffStore:
    """The last `max_items` handoffs for at most `ttl_s`, in memory: enough for a desktop to fetch the
    handoff while the human picks up. The call's record (gateway/records/) keeps the long-term copy."""

    def __init__(self, max_items: int = 5000, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, Handoff] = OrderedDict()

    def put(self, handoff: Handoff) -> None:
        self._expire()
        self._items[handoff.id] = handoff
        self._items.move_to_end(handoff.id)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, handoff_id: str) -> Handoff | None:
        self._expire()
        return self._items.get(handoff_id)

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            first = next(iter(self._items.values()))
            if now - first.created_at <= self.ttl_s:
                break
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
