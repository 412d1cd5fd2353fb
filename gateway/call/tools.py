"""Model tool calls -> call-control verbs. Pure mapping plus one awaited verb; never raises.

Each tool returns the JSON object given back to the model as `function_call_output`: `{"ok": true, ...}`
or `{"ok": false, "error": "..."}`. Failures are returned (and then spoken by the model), never dropped.
Targets the model names are looked up in the profile's `transfer_targets`; a raw number or URI from the
model is refused, so a prompt injection cannot dial arbitrary destinations.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.log import fields
from gateway.profiles import Profile

log = logging.getLogger("gateway.tools")

NO_CONTROL = "call control unavailable"


class _Control(Protocol):  # the subset of gateway.call.control.CallControl we call
    async def hangup(self, cause: str = ...) -> None: ...
    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None: ...
    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None: ...
    async def add_participant(self, target: str) -> None: ...


@dataclass
class ToolResult:
    output: dict[str, Any]
    end_call: bool = False  # the media session should end the stream once the goodbye has played
    speak: bool = True  # ask the model for a response about the result


def _error_text(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


async def run_tool(
    name: str,
    arguments: str,
    *,
    control: _Control | None,
    profile: Profile,
    call_uuid: str,
    summary: str = "",
) -> ToolResult:
    try:
        args = json.loads(arguments or "{}")
        if not isinstance(args, dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as exc:
        return ToolResult({"ok": False, "error": f"bad arguments: {exc}"})
    if name not in profile.tools:
        return ToolResult({"ok": False, "error": f"tool {name!r} is not enabled for this agent"})

    if name == "end_call":
        reason = str(args.get("reason", ""))
        # The goodbye is in the same response; the session hangs up after it has played.
        return ToolResult({"ok": True, "ending": True, "reason": reason}, end_call=True, speak=False)

    if name in ("transfer_call", "add_participant"):
        target_name = str(args.get("target", ""))
        target = profile.resolve_target(target_name)
        if target is None:
            known = ", ".join(sorted(profile.transfer_targets)) or "none"
            error = f"unknown target {target_name!r}; known targets: {known}"
            return ToolResult({"ok": False, "error": error})
        if control is None:
            return ToolResult({"ok": False, "error": NO_CONTROL})
        try:
            if name == "transfer_call":
                await control.transfer(target)
            else:
                await control.add_participant(target)
        except Exception as exc:  # CallControlError carries FreeSWITCH's -ERR text
            log.warning("tool failed", extra=fields(call=call_uuid, tool=name, error=_error_text(exc)))
            return ToolResult({"ok": False, "error": _error_text(exc)})
        return ToolResult({"ok": True, "target": target_name})

    if name == "escalate":
        reason = str(args.get("reason", ""))
        urgency = str(args.get("urgency", "normal"))
        target = profile.resolve_target(profile.escalation_target) if profile.escalation_target else None
        if target is None:
            return ToolResult({"ok": False, "error": "no escalation target configured"})
        if control is None:
            return ToolResult({"ok": False, "error": NO_CONTROL})
        try:
            await control.escalate(target, reason, urgency, summary)
        except Exception as exc:
            log.warning("tool failed", extra=fields(call=call_uuid, tool=name, error=_error_text(exc)))
            return ToolResult({"ok": False, "error": _error_text(exc)})
        return ToolResult({"ok": True, "escalated_to": profile.escalation_target})

    return ToolResult({"ok": False, "error": f"unknown tool {name!r}"})
