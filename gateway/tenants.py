"""Tenants: who owns which calls, profiles, numbers, tokens, caps and webhooks.

A single-tenant install needs nothing here: without `GATEWAY_TENANTS_FILE` there is one tenant,
`default`, built from today's settings (GATEWAY_ADMIN_TOKENS, GATEWAY_AUTH_TOKENS, every profile,
GATEWAY_OUTBOUND_*). With the file, each entry adds a tenant (YAML):

    tenants:
      acme:
        profiles: [acme-sales]                 # agent profiles this tenant may run (and owns)
        numbers: ["+15550100", "+15550101"]     # caller IDs it may present; inbound numbers it owns
        admin_tokens: "acme-ops:control:9fk3...,acme-noc:read:Hh2..."  # name:scope:secret, see auth.py
        stream_tokens: ["acme-stream-secret-..."]  # extra media tokens accepted (GATEWAY_AUTH_TOKENS)
        max_outbound: 5                         # concurrent outbound calls (default 5)
        max_inbound: 20                         # concurrent inbound streams (default: only the global
                                                # GATEWAY_MAX_CALLS); beyond it a call is refused as at
                                                # the global cap (503 at the upgrade, SIP 503 to the edge)
        queue_max_wait_s: 300                   # how long a call may wait for one of them
        webhook_url: https://acme.example/hooks/calls   # call progress events, HMAC-signed
        webhook_secret: "..."
        metric_label: acme                      # the `tenant` label on outbound metrics
        calling_hours: "08:00-21:00"            # in the callee's time zone; "" = any time
        timezone: America/New_York              # when a call names no time zone

A tenant token (from the file) sees and controls only its tenant's calls: another tenant's call is a
404 to it, as if it did not exist. Tokens in GATEWAY_ADMIN_TOKENS are the operator's: every tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gateway.auth import AdminToken, parse_admin_tokens

DEFAULT_TENANT = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class TenantError(Exception):
    """A tenants file that cannot be used; the message names the tenant and the field."""


class TenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    profiles: list[str] = Field(min_length=1)  # a tenant runs only the profiles it names
    numbers: list[str] = Field(default_factory=list)
    admin_tokens: str = ""
    stream_tokens: list[SecretStr] = Field(default_factory=list)
    max_outbound: int = Field(5, ge=1, le=10000)
    max_inbound: int | None = Field(None, ge=1, le=100000)
    queue_max_wait_s: float = Field(300.0, ge=0)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    metric_label: str | None = None
    calling_hours: str = ""
    timezone: str = "UTC"

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_as_strings(cls, v: Any) -> Any:
        return [str(n) for n in v] if isinstance(v, list) else v

    @field_validator("calling_hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        from gateway.outbound.pacing import CallingHours

        CallingHours.parse(v, "UTC")  # raises ValueError naming the problem
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from gateway.outbound.pacing import zone

        zone(v)
        return v


@dataclass
class Tenant:
    name: str
    profiles: frozenset[str]  # empty = every profile (the default tenant of a single-tenant install)
    numbers: frozenset[str]
    admin_tokens: list[AdminToken]
    stream_tokens: list[str]
    max_outbound: int = 5
    queue_max_wait_s: float = 300.0
    max_inbound: int | None = None  # concurrent inbound streams; None: no cap beyond the global one
    webhook_url: str | None = None
    webhook_secret: bytes | None = field(default=None, repr=False)
    metric_label: str = DEFAULT_TENANT
    calling_hours: str = ""
    timezone: str = "UTC"

    def may_use_profile(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles

    def may_present(self, caller_id: str, default_caller_id: str = "") -> bool:
        """Caller-ID policy: a tenant presents only numbers it owns (or the install's default caller ID
        when it owns none), never a number a request makes up."""
        if self.numbers:
            return caller_id in self.numbers
        return bool(default_caller_id) and caller_id == default_caller_id


class TenantSet:
    def __init__(self, tenants: dict[str, Tenant]) -> None:
        if DEFAULT_TENANT not in tenants:
            raise TenantError(f"no {DEFAULT_TENANT!r} tenant")
        self.tenants = tenants
        self._by_profile = {p: t for t in tenants.values() for p in t.profiles}
        self._by_number = {n: t for t in tenants.values() for n in t.numbers}

    @property
    def default(self) -> Tenant:
        return self.tenants[DEFAULT_TENANT]

    def get(self, name: str | None) -> Tenant:
        return self.tenants.get(name or DEFAULT_TENANT) or self.default

    def admin_tokens(self) -> list[AdminToken]:
        return [t for tenant in self.tenants.values() for t in tenant.admin_tokens]

    def stream_tokens(self) -> list[str]:
        return [t for tenant in self.tenants.values() for t in tenant.stream_tokens]

    def owner(self, *, tenant: str | None = None, profile: str | None = None,
              number: str | None = None) -> Tenant:
        """The tenant of a call: named in its metadata, else the owner of its profile, else of the
        number it reached, else the default tenant."""
        if tenant and tenant in self.tenants:
            return self.tenants[tenant]
        if profile and profile in self._by_profile:
            return self._by_profile[profile]
        if number:
            bare = number.split("@", 1)[0].removeprefix("sip:")
            for key in (number, bare):
                if key in self._by_number:
                    return self._by_number[key]
        return self.default

    @classmethod
    def load(cls, settings: Any) -> TenantSet:
        """The default tenant from today's settings, plus the tenants of GATEWAY_TENANTS_FILE."""
        default = Tenant(
            name=DEFAULT_TENANT, profiles=frozenset(), numbers=frozenset(settings.outbound_caller_ids),
            admin_tokens=[], stream_tokens=[], max_outbound=settings.outbound_max_concurrent,
            queue_max_wait_s=settings.outbound_queue_max_wait_s,
            webhook_url=settings.outbound_webhook_url,
            webhook_secret=(settings.outbound_webhook_secret.get_secret_value().encode()
                            if settings.outbound_webhook_secret else None),
            calling_hours=settings.outbound_calling_hours, timezone=settings.outbound_timezone)
        tenants = {DEFAULT_TENANT: default}
        if settings.tenants_file:
            tenants.update(read_tenants_file(Path(settings.tenants_file)))
        return cls(tenants)


def read_tenants_file(path: Path) -> dict[str, Tenant]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TenantError(f"{path}: cannot read YAML: {exc}") from None
    entries = doc.get("tenants") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise TenantError(f"{path}: expected a mapping `tenants: {{name: {{...}}}}`")
    out: dict[str, Tenant] = {}
    token_names: set[str] = set()
    for name, body in entries.items():
        name = str(name)
        if not _NAME.fullmatch(name) or name == DEFAULT_TENANT:
            raise TenantError(f"{path}: tenant name {name!r}: lower-case letters, digits, _ and -, "
                              f"at most 32, not {DEFAULT_TENANT!r}")
        try:
            cfg = TenantConfig.model_validate(body or {})
            tokens = parse_admin_tokens(cfg.admin_tokens)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise TenantError(f"{path}: tenant {name}: {detail}") from None
        except ValueError as exc:
            raise TenantError(f"{path}: tenant {name}: admin_tokens: {exc}") from None
        for token in tokens:
            if token.name in token_names:
                raise TenantError(f"{path}: tenant {name}: token name {token.name!r} used twice")
            token_names.add(token.name)
        if cfg.webhook_url and cfg.webhook_secret is None:
            raise TenantError(f"{path}: tenant {name}: webhook_url needs webhook_secret (events are signed)")
        out[name] = Tenant(
            name=name, profiles=frozenset(cfg.profiles), numbers=frozenset(cfg.numbers),
            admin_tokens=[AdminToken(t.name, t.scope, t.secret, tenant=name) for t in tokens],
            stream_tokens=[s.get_secret_value() for s in cfg.stream_tokens],
            max_outbound=cfg.max_outbound, queue_max_wait_s=cfg.queue_max_wait_s,
            max_inbound=cfg.max_inbound, webhook_url=cfg.webhook_url,
            webhook_secret=cfg.webhook_secret.get_secret_value().encode() if cfg.webhook_secret else None,
            metric_label=cfg.metric_label or name, calling_hours=cfg.calling_hours, timezone=cfg.timezone)
    return out
