"""Webhook payloads for a handoff: pure builders, no I/O.

- `generic`: the gateway's own shape (documented in docs/handoff.md).
- `flex_task`: the `attributes` JSON of a Twilio TaskRouter task, which Flex shows to the agent and
  TaskRouter workflows route on (https://www.twilio.com/docs/taskrouter/api/task#task-attributes;
  Flex reads `name`, `type`, `channelType` and routes on anything in attributes:
  https://www.twilio.com/docs/flex/developer/routing/taskrouter). A receiver passes it as the
  `Attributes` parameter of `POST /v1/Workspaces/{ws}/Tasks` (with its own `WorkflowSid`).
"""

from __future__ import annotations

import json
from typing import Any

from gateway.handoff.record import Handoff

SCHEMA = "gateway.handoff.v1"


def generic(h: Handoff, last_turns: int) -> dict[str, Any]:
    s = h.summary
    return {
        "schema": SCHEMA,
        "handoff_id": h.id,
        "call_id": h.call_id,
        "sip_call_id": h.sip_call_id,
        "profile": h.profile,
        "created_at": h.created_at,
        "caller": h.caller,
        "hops": h.hops,
        "mode": h.mode,
        "queue": h.queue,
        "attributes": h.attributes.model_dump(),
        "summary": {"text": s.text, "reason": s.reason, "urgency": s.urgency, "sentiment": s.sentiment,
                    "source": s.source, "redacted_by": s.redacted_by},
        "slots": {"name": s.slots.name, "callback_number": s.slots.callback_number,
                  "reason": s.slots.reason, "urgency": s.slots.urgency},
        "last_turns": h.last_turns(last_turns),
        "fetch": f"/handoffs/{h.id}",
    }


def flex_task(h: Handoff, last_turns: int) -> dict[str, Any]:
    """TaskRouter task attributes (a JSON object; send `json.dumps(...)` as `Attributes`)."""
    s, a = h.summary, h.attributes
    return {
        "type": "ai_handoff",
        "name": s.slots.name or h.caller or "Caller",
        "from": h.caller,
        "channelType": "voice",
        "call_sid": h.call_id if h.call_id.startswith("CA") else None,
        "handoff_id": h.id,
        "skill": a.skill,
        "skills": [a.skill] if a.skill else [],
        "priority": a.priority,
        "vip": a.vip,
        "language": a.language,
        "urgency": s.urgency,
        "sentiment": s.sentiment,
        "queue": h.queue,
        "hops": h.hops,
        "ai_summary": s.text,
        "ai_reason": s.reason,
        "callback_number": s.slots.callback_number,
        "conversation": [{"role": t.get("role"), "text": t.get("text")} for t in h.last_turns(last_turns)],
    }


def flex_task_form(h: Handoff, last_turns: int, workflow_sid: str, timeout_s: int = 120) -> dict[str, str]:
    """The form body of TaskRouter's Create Task request, for a receiver that forwards as is."""
    return {"Attributes": json.dumps(flex_task(h, last_turns), separators=(",", ":")),
            "WorkflowSid": workflow_sid, "Timeout": str(timeout_s), "TaskChannel": "voice"}
