"""The `escalate` tool when the profile has a `handoff:` block: a handoff record (summary, attributes,
hop count), then a blind transfer with the X-AI-* headers, or a warm transfer with a private briefing
(gateway/handoff/warm.py) while the caller stays with the AI."""

from __future__ import annotations

import logging
from typing import Any

from gateway.call.tools import NO_CONTROL, ToolContext, ToolResult
from gateway.handoff.routing import HandoffPolicy, Target
from gateway.handoff.service import HopLimit, current
from gateway.log import fields

log = logging.getLogger("gateway.handoff")


def targets_of(profile: Any, policy: HandoffPolicy) -> list[Target]:
    if policy.targets:
        return list(policy.targets)
    return [Target(target=profile.escalation_target)] if profile.escalation_target else []


async def escalate(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    profile, call = ctx.profile, ctx.call
    policy: HandoffPolicy = profile.handoff
    if ctx.control is None or call is None:
        return ToolResult({"ok": False, "error": NO_CONTROL})
    targets = targets_of(profile, policy)
    if not targets:
        return ToolResult({"ok": False, "error": "no escalation target configured"})
    reason, urgency = str(args.get("reason", "")), str(args.get("urgency", "normal"))
    service = current()
    try:
        h = await service.create(call, policy, reason=reason, urgency=urgency)
    except HopLimit as exc:
        log.warning("handoff refused: hop limit", extra=fields(call=ctx.call_uuid, error=str(exc)))
        return ToolResult({"ok": False, "hop_limit": True,
                           "error": f"{exc}. Do not transfer again: help the caller yourself or take a "
                                    "message."})
    if policy.mode == "warm":
        from gateway.handoff.warm import start_warm_transfer

        error = start_warm_transfer(call, policy, h, targets)
        if error is None:
            return ToolResult({"ok": True, "handoff_id": h.id, "status": "dialling a colleague",
                               "say": "Tell the caller you are getting a colleague and ask them to hold on."})
        log.warning("warm transfer unavailable, transferring blind", extra=fields(call=ctx.call_uuid,
                                                                                  error=error))
    first = targets[0]
    address = profile.resolve_target(first.target)
    if address is None:
        return ToolResult({"ok": False, "error": f"unknown target {first.target!r}"})
    headers = service.headers(h, policy, first)
    try:
        await ctx.control.transfer(address, headers)  # deferred by the call until the confirmation played
    except Exception as exc:
        service.attempt(h, first.target, "failed", str(exc))
        return ToolResult({"ok": False, "error": str(exc).strip() or type(exc).__name__})
    service.attempt(h, first.target, "transferred")
    h.state = "transferred"
    return ToolResult({"ok": True, "escalated_to": first.target, "handoff_id": h.id})
