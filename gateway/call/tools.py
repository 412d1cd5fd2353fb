"""Model tools as one table: each entry is the schema the model sees and the handler that runs it.

A handler maps the model's arguments to one call-control verb and returns the JSON object given back
to the model as `function_call_output`: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
Failures are returned (and then spoken by the model), never raised. Targets the model names are looked
up in the profile's `transfer_targets`; a raw number or URI from the model passes only where the
profile's operator allow-list permits it (gateway/call/policy.py, the same gate as the admin API), so a
prompt injection cannot dial arbitrary destinations. Profiles are checked against `TOOLS` when they load.

Adding a tool is one entry in `TOOLS` (plus its name in a profile's `tools` list).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.call.control import CallControlError
from gateway.call.policy import TransferPolicy
from gateway.log import fields

if TYPE_CHECKING:
    from gateway.profiles import Profile

log = logging.getLogger("gateway.tools")

NO_CONTROL = "call control unavailable"


class _Control(Protocol):  # the subset of the call's verbs the tools use
    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None: ...
    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None: ...
    async def add_participant(self, target: str) -> None: ...


@dataclass
class ToolResult:
    output: dict[str, Any]
    end_call: bool = False  # the call ends once the goodbye has played
    speak: bool = True  # ask the model for a response about the result


@dataclass(frozen=True)
class ToolContext:
    control: _Control | None
    profile: Profile
    call_uuid: str
    summary: str = ""
    call: Any = None  # the CallSession (gateway/handoff/ reads its transcript and asks its model)


Handler = Callable[[dict[str, Any], ToolContext], Awaitable[ToolResult]]


@dataclass(frozen=True)
class Tool:
    description: str
    parameters: dict[str, Any]
    handler: Handler
    # True when the handler moves the call away (transfer, conference): the call lets what the agent
    # already said play out first, so "Transferring you..." is heard in full.
    moves_call: bool = False

    def schema(self, name: str) -> dict[str, Any]:
        """The Realtime `session.tools[]` entry."""
        return {"type": "function", "name": name, "description": self.description,
                "parameters": self.parameters}


def _error_text(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


async def _verb(name: str, ctx: ToolContext, verb: Callable[[_Control], Awaitable[None]],
                ok: dict[str, Any]) -> ToolResult:
    if ctx.control is None:
        return ToolResult({"ok": False, "error": NO_CONTROL})
    try:
        await verb(ctx.control)
    except Exception as exc:  # CallControlError carries FreeSWITCH's (or Twilio's) own text
        log.warning("tool failed", extra=fields(call=ctx.call_uuid, tool=name, error=_error_text(exc)))
        return ToolResult({"ok": False, "error": _error_text(exc)})
    return ToolResult({"ok": True, **ok})


def _named_target(args: dict[str, Any], ctx: ToolContext) -> tuple[str, str | None, ToolResult | None]:
    target_name = str(args.get("target", ""))
    target = ctx.profile.resolve_target(target_name)
    if target is None:
        try:  # not a name: a raw target passes only through the operator allow-list
            target = TransferPolicy.for_profile(ctx.profile).check(target_name, action="tool",
                                                                   call=ctx.call_uuid)
            return target_name, target.strip(), None
        except CallControlError:  # refused: answered below with the names the model may use
            pass
        known = ", ".join(sorted(ctx.profile.transfer_targets)) or "none"
        return target_name, None, ToolResult({"ok": False, "error": f"unknown target {target_name!r}; "
                                                                 f"known targets: {known}"})
    return target_name, target, None


async def _transfer_call(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    name, target, refused = _named_target(args, ctx)
    if refused is not None or target is None:
        return refused or ToolResult({"ok": False})
    return await _verb("transfer_call", ctx, lambda c: c.transfer(target), {"target": name})


async def _add_participant(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    name, target, refused = _named_target(args, ctx)
    if refused is not None or target is None:
        return refused or ToolResult({"ok": False})
    return await _verb("add_participant", ctx, lambda c: c.add_participant(target), {"target": name})


async def _end_call(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    # The goodbye is in the same response; the call hangs up after it has played.
    return ToolResult({"ok": True, "ending": True, "reason": str(args.get("reason", ""))}, end_call=True,
                      speak=False)


async def _escalate(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    p = ctx.profile
    if p.on_call is not None:  # after hours: page the on-call ladder instead (gateway/outbound/ladder.py)
        paged = _page_on_call(args, ctx)
        if paged is not None:
            return paged
    if getattr(p, "handoff", None) is not None:  # summary, attributes, hops, webhook (gateway/handoff/)
        from gateway.handoff.escalation import escalate

        return await escalate(args, ctx)
    target = p.resolve_target(p.escalation_target) if p.escalation_target else None
    if target is None:
        return ToolResult({"ok": False, "error": "no escalation target configured"})
    reason, urgency = str(args.get("reason", "")), str(args.get("urgency", "normal"))
    return await _verb("escalate", ctx, lambda c: c.escalate(target, reason, urgency, ctx.summary),
                       {"escalated_to": p.escalation_target})


def _page_on_call(args: dict[str, Any], ctx: ToolContext) -> ToolResult | None:
    from gateway.outbound.ladder import pager
    from gateway.outbound.service import OutboundRefused

    ladders = pager()
    if ladders is None or not ladders.after_hours(ctx.profile):
        return None  # business hours (or no ladder service): the normal escalation below
    try:
        run = ladders.page(ctx.profile.name, summary=ctx.summary or str(args.get("reason", "")),
                          call_uuid=ctx.call_uuid)
    except OutboundRefused as exc:
        return ToolResult({"ok": False, "error": str(exc)})
    return ToolResult({"ok": True, "paged": "on-call", "incident": run.id,
                       "tell_caller": "It is outside business hours; the on-call person is being called "
                                      "now and will join this call or call back."})
async def _handoff_decision(args: dict[str, Any], ctx: ToolContext, accept: bool) -> ToolResult:
    # The human on a warm transfer's briefing leg said yes/no (gateway/handoff/warm.py): this call is
    # that leg, and its uuid names the pending decision.
    from gateway.handoff.service import current

    if not current().decide(ctx.call_uuid, accept):
        return ToolResult({"ok": False, "error": "no handoff is waiting for a decision on this call"})
    return ToolResult({"ok": True, "accepted": accept}, speak=False)


async def _accept_handoff(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return await _handoff_decision(args, ctx, True)


async def _decline_handoff(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    return await _handoff_decision(args, ctx, False)


def _target_param(description: str | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string"}
    if description:
        prop["description"] = description
    return {"type": "object", "properties": {"target": prop}, "required": ["target"]}


TOOLS: dict[str, Tool] = {
    "transfer_call": Tool(
        "Transfer the caller to a named destination (a person or department).",
        _target_param("destination name"), _transfer_call, moves_call=True),
    "end_call": Tool(
        "Hang up after saying goodbye.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
        _end_call),
    "escalate": Tool(
        "Hand the caller to a human colleague with a short reason.",
        {"type": "object",
         "properties": {"reason": {"type": "string"},
                        "urgency": {"type": "string", "enum": ["low", "normal", "high"]}},
         "required": ["reason", "urgency"]},
        _escalate, moves_call=True),
    "add_participant": Tool(
        "Bring a human into the call as a conference participant.",
        _target_param(), _add_participant, moves_call=True),
    # For the briefing agent on a warm transfer's human leg (gateway/profiles/briefing.yaml).
    "accept_handoff": Tool(
        "The colleague you are briefing says they will take the call.",
        {"type": "object", "properties": {}}, _accept_handoff),
    "decline_handoff": Tool(
        "The colleague you are briefing says they cannot take the call.",
        {"type": "object", "properties": {}}, _decline_handoff),
}


def schemas(names: list[str]) -> list[dict[str, Any]]:
    return [TOOLS[name].schema(name) for name in names]


def unknown_tools(names: list[str]) -> list[str]:
    return sorted(set(names) - set(TOOLS))


async def run_tool(name: str, arguments: str, *, control: _Control | None, profile: Profile,
                   call_uuid: str, summary: str = "", call: Any = None) -> ToolResult:
    """Run one tool call from the model; never raises."""
    try:
        args = json.loads(arguments or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        return ToolResult({"ok": False, "error": f"bad arguments: {exc}"})
    if name not in profile.tools:
        return ToolResult({"ok": False, "error": f"tool {name!r} is not enabled for this agent"})
    tool = TOOLS.get(name)
    if tool is None:
        return ToolResult({"ok": False, "error": f"unknown tool {name!r}"})
    return await tool.handler(args, ToolContext(control, profile, call_uuid, summary, call))
