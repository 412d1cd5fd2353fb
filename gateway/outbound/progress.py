"""The outbound call object and its progress: what `GET /calls/{id}` shows and what the events say.

States, in the order a call moves through them:

    queued      accepted; waiting for a tenant slot (the tenant's concurrent-call cap)
    scheduled   waiting for the callee's calling-hours window or a retry back-off
    dialing     INVITE sent through the edge (FreeSWITCH `originate`, or Twilio `calls.create`)
    ringing     the callee's side rings (SIP 180/183; Twilio `ringing`)
    answered    the callee answered; the agent session runs on the normal AI path
    completed   answered and then ended                                     (final)
    busy        SIP 486/600 (USER_BUSY); Twilio `busy`                       (final unless retried)
    no_answer   ring timeout (NO_ANSWER); Twilio `no-answer`                 (final unless retried)
    failed      anything else, with `sip_cause` / `hangup_cause`             (final)
    refused     never dialled: do-not-call list, queue timeout, caller-ID policy (final)
    canceled    hung up by the API before it was answered                    (final)

FreeSWITCH's hangup causes map to SIP codes as in its Hangup Cause Code Table
(https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Troubleshooting-Debugging/Hangup-Cause-Code-Table_3964945/).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

FINAL = frozenset({"completed", "busy", "no_answer", "failed", "refused", "canceled"})

_BUSY_CAUSES = frozenset({"USER_BUSY"})
_NO_ANSWER_CAUSES = frozenset({"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL_TIMEOUT",
                               "ALLOTTED_TIMEOUT", "PROGRESS_TIMEOUT"})


def classify_end(hangup_cause: str | None, sip_status: int | None, answered: bool) -> str:
    """Final state of a try from FreeSWITCH's hangup cause and the SIP final status it saw."""
    if answered:
        return "completed"
    if sip_status in (486, 600) or (hangup_cause or "") in _BUSY_CAUSES:
        return "busy"
    if (hangup_cause or "") in _NO_ANSWER_CAUSES and sip_status in (None, 487, 408, 480):
        return "no_answer"
    if (hangup_cause or "") == "ORIGINATOR_CANCEL":
        return "canceled"
    return "failed"


def parse_sip_status(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        code = int(value.strip())
        return code if 100 <= code <= 699 else None
    return None


@dataclass
class OutboundCall:
    """One outbound call (all its tries share the id; each try gets a new channel uuid)."""

    id: str
    tenant: str
    to: str
    caller_id: str
    profile: str
    via: str = "sip"  # sip (FreeSWITCH originate through the edge) or twilio (REST)
    priority: int = 0
    variables: dict[str, str] = field(default_factory=dict)
    timezone: str | None = None
    max_attempts: int = 1
    purpose: str = "agent"  # agent (a normal AI call) or ladder (an on-call leg of an escalation)
    state: str = "queued"
    uuid: str | None = None  # the current try's FreeSWITCH channel uuid / Twilio CallSid
    worker: str | None = None
    attempt: int = 0
    sip_status: int | None = None
    hangup_cause: str | None = None
    reason: str | None = None  # why refused / failed, in words
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    not_before: float | None = None  # wall time of the next try (calling hours, back-off)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id, "direction": "outbound", "via": self.via, "tenant": self.tenant, "to": self.to,
            "caller_id": self.caller_id, "profile": self.profile, "purpose": self.purpose,
            "priority": self.priority, "variables": dict(self.variables), "state": self.state,
            "uuid": self.uuid, "worker": self.worker, "attempt": self.attempt,
            "max_attempts": self.max_attempts, "sip_status": self.sip_status,
            "hangup_cause": self.hangup_cause, "reason": self.reason, "created_at": self.created_at,
            "answered_at": self.answered_at, "ended_at": self.ended_at, "not_before": self.not_before,
            "events": list(self.events),
        }
