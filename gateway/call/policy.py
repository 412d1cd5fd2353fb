"""The transfer policy: where a call may be sent. One gate for every path that moves a call (model tools,
the admin API, escalation, the fallback transfer), because `PolicedControl` wraps the call's control
object and every transfer, escalation and conference dial passes through it.

A target is allowed when:
1. the agent profile names it: it is one of the values of `transfer_targets` (the model and operators
   may also use the names; they are resolved before the gate); or
2. the profile's operator allow-list `transfer_allow` permits it:
   - `numbers`: regular expressions, each matched against the whole number or extension
     (`"2[0-9]{3}"`, `"\\+1800[0-9]{7}"`);
   - `sip_hosts`: hosts a `sip:`/`sips:` URI may point at (`pbx.example.com`, or `*.example.com` for
     any subdomain); the host is compared without port or parameters, case-insensitively;
   - `refer`: whether `refer:<sip URI>` (a SIP REFER: the carrier takes the call away from the
     appliance) is allowed at all; its URI's host must also be on `sip_hosts`.

Nothing else passes: with the default (empty) allow-list a number dialled out through the edge, a
`sip:` URI to any host, a REFER away or a conference `bgdial` of a listener all need the profile to name
the destination. Refusals raise `CallControlError(kind=FORBIDDEN)` (403 on the admin API; the model
hears the error text) and are logged and counted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import metrics as m
from gateway.call.control import CallControlError, ErrorKind
from gateway.log import fields, pii

log = logging.getLogger("gateway.policy")

_HOST = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?|\[[0-9A-Fa-f:.]+\]")
_SIP_HOST = re.compile(r"sips?:(?:[^@]*@)?(\[[^\]]+\]|[^:;?>]+)", re.IGNORECASE)


class TransferAllow(BaseModel):
    """A profile's `transfer_allow`: the operator's allow-list for targets the profile does not name."""

    model_config = ConfigDict(extra="forbid")
    numbers: list[str] = Field(default_factory=list)
    sip_hosts: list[str] = Field(default_factory=list)
    refer: bool = False

    @field_validator("numbers")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad pattern {p!r}: {exc}") from None
        return patterns

    @field_validator("sip_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for h in hosts:
            if not _HOST.fullmatch(h):
                raise ValueError(f"bad host {h!r}: a host name, *.domain, or an address")
        return [h.lower() for h in hosts]


def sip_host(uri: str) -> str | None:
    match = _SIP_HOST.match(uri)
    return match.group(1).lower() if match else None


class TransferPolicy:
    """The policy of one profile: `check(target)` returns the target or raises FORBIDDEN."""

    def __init__(self, named: list[str], allow: TransferAllow, profile: str = "") -> None:
        self.named = frozenset(t.strip() for t in named if t)
        self.allow = allow
        self.profile = profile
        self._numbers = [re.compile(p) for p in allow.numbers]

    @classmethod
    def for_profile(cls, profile: Any) -> TransferPolicy:
        return cls(list(profile.transfer_targets.values()),
                   getattr(profile, "transfer_allow", None) or TransferAllow(), profile.name)

    def _host_allowed(self, uri: str) -> bool:
        host = sip_host(uri)
        if host is None:
            return False
        for allowed in self.allow.sip_hosts:
            if allowed.startswith("*.") and host.endswith(allowed[1:]) and host != allowed[2:]:
                return True
            if host == allowed:
                return True
        return False

    def refusal(self, target: str) -> tuple[str, str] | None:
        """None when allowed, else (kind, reason)."""
        target = target.strip()
        if target in self.named:
            return None
        if target.startswith("refer:"):
            uri = target[len("refer:"):]
            if not self.allow.refer:
                return "refer", "a REFER away from the appliance is not allowed for this agent"
            if not self._host_allowed(uri):
                return "refer", "the REFER destination's host is not on the allow-list"
            return None
        if target.lower().startswith(("sip:", "sips:")):
            if not self._host_allowed(target):
                return "sip_uri", "the SIP URI's host is not on this agent's allow-list"
            return None
        if any(p.fullmatch(target) for p in self._numbers):
            return None
        return "number", "the number is neither a named target nor on this agent's allow-list"

    def check(self, target: str, *, action: str, call: str = "") -> str:
        refused = self.refusal(target)
        if refused is None:
            return target
        kind, reason = refused
        m.TRANSFERS_REFUSED.labels(kind=kind).inc()
        log.warning("transfer refused by policy", extra=fields(call=call, action=action, profile=self.profile,
                                                               target=pii(target), reason=reason))
        raise CallControlError(f"transfer to {target!r} not allowed: {reason}", kind=ErrorKind.FORBIDDEN)


class PolicedControl:
    """A call's control with the transfer policy in front of every verb that moves the call or dials
    someone in. Everything else (hangup, play, DTMF, file-mode hooks) goes to the call's control as is."""

    _OWN = frozenset({"_inner", "_policy", "_call"})

    def __init__(self, inner: Any, policy: TransferPolicy, call: str = "") -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_policy", policy)
        object.__setattr__(self, "_call", call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. on_play_file, set by the call
        setattr(self._inner, name, value)

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        await self._inner.transfer(self._policy.check(target, action="transfer", call=self._call), headers)

    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None:
        await self._inner.escalate(self._policy.check(target, action="escalate", call=self._call),
                                   reason, urgency, summary)

    async def add_participant(self, target: str) -> None:
        await self._inner.add_participant(self._policy.check(target, action="conference", call=self._call))


def policed(make: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a control factory `(session, start) -> control | None` so every control it makes is policed
    by the session's profile."""

    def factory(session: Any, start: Any) -> Any:
        control = make(session, start)
        if control is None:
            return None
        return PolicedControl(control, TransferPolicy.for_profile(session.profile), start.call_id)

    return factory
