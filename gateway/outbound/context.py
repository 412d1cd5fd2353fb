"""What the agent is told about an outbound call: the direction and the request's custom variables,
from the stream metadata the `ai-outbound` extension writes (freeswitch-conf/dialplan/gateway.xml)."""

from __future__ import annotations

from typing import Any

from gateway.outbound.originate import decode_vars


def call_context(extra: dict[str, Any]) -> str:
    """Text appended to the profile's instructions; "" for an inbound call."""
    if extra.get("direction") != "outbound":
        return ""
    lines = ["\n\nThis is an outbound call: you called this person; they did not call you."]
    variables = decode_vars(extra.get("vars"))
    if variables:
        lines.append("Details of this call (from the system that placed it):")
        lines += [f"- {k}: {v}" for k, v in variables.items()]
    return "\n".join(lines)


def call_greeting(extra: dict[str, Any]) -> str | None:
    """An outbound call's own first words (the `greeting` variable: a campaign's personal opening, the
    ladder's announcement) instead of the profile's greeting; None for inbound calls."""
    if extra.get("direction") != "outbound":
        return None
    greeting = decode_vars(extra.get("vars")).get("greeting", "").strip()
    return greeting.replace('"', "'") or None
