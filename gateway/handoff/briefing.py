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


def briefing_text(h: Handoff, accept_digit: str = "1", decline_digit: str = "2", *,
                  spoken: bool = False) -> str:
    s = h.summary
    who = s.slots.name or "a caller"
    parts = [f"Incoming call from {who}.", s.text]
    if s.urgency == "high":
        parts.insert(1, "This is urgent.")
    if spoken:  # a Twilio conference passes no DTMF to the coach's stream: the colleague answers aloud
        parts.append("Say yes to take the call, or no to decline.")
    else:
        parts.append(f"Press {accept_digit} to take the call, or {decline_digit} to decline.")
    return " ".join(p.strip() for p in parts if p.strip())


def briefing_for(meta: Any) -> Briefing | None:
    """The briefing for a stream whose metadata names a handoff this gateway holds, else None."""
    back = str((getattr(meta, "extra", None) or {}).get("handoff_return") or "")
    if _ID.fullmatch(back):  # a Twilio caller back from a warm transfer nobody took (twilio_warm.py)
        from gateway.handoff.twilio_warm import returning_greeting

        said = returning_greeting(back, str(getattr(meta, "call_id", "")))
        if said is not None:
            return Briefing(said, "\n\nNo colleague could take this call just now; you told the caller so. "
                                  "Do not transfer again: help them yourself or take a message.")
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
    twilio = bool(getattr(meta, "stream_id", ""))  # the coach leg of a Twilio warm transfer
    return Briefing(briefing_text(h, accept, decline, spoken=twilio), context)
