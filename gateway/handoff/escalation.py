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


def _on_twilio(control: Any) -> bool:
    return getattr(control, "rest", None) is not None  # gateway/call/twilio_control.py


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
        if error is None and (_on_twilio(ctx.control) or policy.hold_audio):  # it says "please hold" itself
            return ToolResult({"ok": True, "handoff_id": h.id, "status": "holding the caller"}, speak=False)
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


async def operator_handoff(session: Any, reason: str, urgency: str) -> dict[str, Any]:
    """The admin API's handoff verb: what `escalate` does, started by an operator (POST
    /calls/{uuid}/handoff). Raises CallControlError (kinds map to HTTP statuses in the admin API)."""
    from gateway.call.control import CallControlError, ErrorKind

    profile = session.profile
    policy: HandoffPolicy | None = getattr(profile, "handoff", None)
    if profile is None or policy is None:
        raise CallControlError("this call's profile has no handoff block", kind=ErrorKind.CONFLICT)
    control = session.control
    if control is None:
        raise CallControlError("call control unavailable for this call", kind=ErrorKind.UNAVAILABLE)
    targets = targets_of(profile, policy)
    if not targets:
        raise CallControlError("no handoff target configured", kind=ErrorKind.CONFLICT)
    service = current()
    try:
        h = await service.create(session, policy, reason=session.redactor.text(reason), urgency=urgency)
    except HopLimit as exc:
        raise CallControlError(str(exc), kind=ErrorKind.CONFLICT) from None
    if policy.mode == "warm":
        from gateway.handoff.warm import start_warm_transfer

        error = start_warm_transfer(session, policy, h, targets)
        if error is None and (_on_twilio(control) or policy.hold_audio):
            return {"handoff_id": h.id, "mode": "warm", "status": "holding"}
        if error is None:
            session.say("Please hold on, I am getting a colleague for you.")
            return {"handoff_id": h.id, "mode": "warm", "status": "dialling"}
    first = targets[0]
    address = profile.resolve_target(first.target)
    if address is None:
        raise CallControlError(f"unknown target {first.target!r}", kind=ErrorKind.INVALID)
    headers = service.headers(h, policy, first)
    await session.act_when_quiet(lambda: control.transfer(address, headers), "escalated")
    service.attempt(h, first.target, "transferred")
    h.state = "transferred"
    return {"handoff_id": h.id, "mode": "blind", "target": first.target}
