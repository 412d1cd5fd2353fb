"""What the human hears when a warm transfer reaches them: the briefing, spoken by an AI session on
the human's own leg (the worker's ai-briefing extension streams that leg to the gateway, as any call),
so the caller never hears it and it works wherever the worker and the gateway run.

The leg's stream metadata names the handoff (`handoff_id`); its greeting becomes the briefing and its
instructions get the handoff's summary, so a live model can answer the human's questions about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.handoff.record import Handoff

_ID = re.compile(r"ho_[A-Za-z0-9_-]{10,40}")


@dataclass(frozen=True)
class Briefing:
    greeting: str
    context: str


def briefing_text(h: Handoff, accept_digit: str = "1", decline_digit: str = "2") -> str:
    s = h.summary
    who = s.slots.name or "a caller"
    parts = [f"Incoming call from {who}.", s.text]
    if s.urgency == "high":
        parts.insert(1, "This is urgent.")
    parts.append(f"Press {accept_digit} to take the call, or {decline_digit} to decline.")
    return " ".join(p.strip() for p in parts if p.strip())


def briefing_for(meta: Any) -> Briefing | None:
    """The briefing for a stream whose metadata names a handoff this gateway holds, else None."""
    handoff_id = str((getattr(meta, "extra", None) or {}).get("handoff_id") or "")
    if getattr(meta, "caller", "") != "ai-briefing" or not _ID.fullmatch(handoff_id):
        return None
    from gateway.handoff.service import current

    h = current().store.get(handoff_id)
    if h is None:
        return None
    accept, decline = h.digits
    context = ("\n\nYou are briefing a human colleague who is about to take over a call; the caller cannot "
               f"hear you. Handoff summary: {h.summary.text} Reason: {h.summary.reason}. Urgency: "
               f"{h.summary.urgency}. Answer the colleague's questions about the call in one short sentence.")
    return Briefing(briefing_text(h, accept, decline), context)
