"""Admin API authentication: named bearer tokens with scopes, checked before any work.

`GATEWAY_ADMIN_TOKENS` holds comma-separated entries `name:scope:secret`:

    GATEWAY_ADMIN_TOKENS="prometheus:metrics:Xq3...,noc:read:9fk...,ops-2026-12:control:Hh2..."

- `name` identifies the holder in audit lines and logs (the secret never appears anywhere);
- `scope` is one of `metrics` (GET /metrics), `read` (also GET /calls, /calls/{uuid}) or `control`
  (also every verb: hangup, transfer, conference); each scope includes the ones before it;
- `secret` is at least 16 characters (e.g. `openssl rand -hex 24`), no commas.

Several entries may share a scope, which is how a secret is rotated: add the new entry, move the
clients, remove the old entry. Secrets are compared with `hmac.compare_digest` against every entry
(no early exit), so the response time says nothing about which secret came close.

With no tokens the API is open, which `Settings` allows only on a loopback address.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from gateway import metrics as m
from gateway.log import fields

log = logging.getLogger("gateway.auth")

MIN_SECRET_CHARS = 16
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class Scope(IntEnum):
    METRICS = 1
    READ = 2
    CONTROL = 3


@dataclass(frozen=True)
class AdminToken:
    name: str
    scope: Scope
    secret: bytes = field(repr=False)
    tenant: str | None = None  # None: the operator's token (every tenant); else only that tenant's calls


def parse_admin_tokens(text: str) -> list[AdminToken]:
    """`name:scope:secret,...` -> tokens. Errors name the entry by position and name, never the secret."""
    tokens: list[AdminToken] = []
    for i, entry in enumerate((e.strip() for e in text.split(",")), start=1):
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        scope_text, _, secret = rest.partition(":")
        if not _NAME.fullmatch(name):
            raise ValueError(f"entry {i}: expected name:scope:secret with a name of letters, digits, _.@-")
        try:
            scope = Scope[scope_text.strip().upper()]
        except KeyError:
            raise ValueError(f"entry {i} ({name}): scope must be metrics, read or control") from None
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"entry {i} ({name}): the secret must be at least {MIN_SECRET_CHARS} characters")
        if any(t.name == name for t in tokens):
            raise ValueError(f"entry {i}: duplicate token name {name!r}")
        tokens.append(AdminToken(name, scope, secret.encode()))
    return tokens


def is_loopback(host: str) -> bool:
    """True for literal loopback addresses and `localhost`; any other name counts as reachable."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Principal:
    """Who made an admin request, for audit lines."""

    name: str
    scope: Scope
    tenant: str | None = None  # None: sees every tenant's calls (gateway/tenants.py)

    def sees(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


OPEN = Principal("open-loopback", Scope.CONTROL)  # no tokens configured (loopback only)


class TokenAuthority:
    def __init__(self, tokens: list[AdminToken]) -> None:
        self.tokens = list(tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def identify(self, authorization: str | None) -> Principal | None:
        """The holder of the bearer token in an `Authorization` header value, or None."""
        if not self.tokens:
            return OPEN
        scheme, _, presented_text = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = presented_text.strip().encode()
        found: AdminToken | None = None
        for token in self.tokens:  # every entry is compared: no early exit
            if hmac.compare_digest(presented, token.secret) and found is None:
                found = token
        if found is None or not presented:
            return None
        return Principal(found.name, found.scope, found.tenant)


# Which scope each admin path needs. Anything not listed needs `read` for GET/HEAD and `control` for
# every other method, so a stranger learns nothing, not even which paths exist.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
PATH_SCOPES = {"/metrics": Scope.METRICS}
# What a tenant's token (gateway/tenants.py) may not use at all: nothing today. The call records are
# partitioned by tenant (gateway/records/api.py scopes each route to the token's tenant) and /metrics
# gives a tenant's token only its tenant's series (gateway/admin.py, metrics.TenantView).
TENANT_DENIED_PREFIXES: tuple[str, ...] = ()


def required_scope(method: str, path: str) -> Scope | None:
    if path in OPEN_PATHS:
        return None
    if path in PATH_SCOPES:
        return PATH_SCOPES[path]
    return Scope.READ if method in ("GET", "HEAD") else Scope.CONTROL


class AdminAuthMiddleware:
    """Pure ASGI middleware: 401 (no or unknown token) / 403 (scope too small) before routing, body
    parsing or any handler runs. The principal is left in `scope["state"]["principal"]` for audit."""

    def __init__(self, app: Any, authority: TokenAuthority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        needed = required_scope(method, path)
        if needed is None:
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        principal = self.authority.identify(header)
        peer = (scope.get("client") or ("?", 0))[0]
        if principal is None:
            m.ADMIN_REFUSED.labels(reason="unauthenticated").inc()
            log.warning("admin request refused: no or unknown token",
                        extra=fields(peer=peer, method=method, path=path))
            await _reply(send, 401, b"unauthorized", [(b"www-authenticate", b'Bearer realm="gateway-admin"')])
            return
        if principal.scope < needed:
            m.ADMIN_REFUSED.labels(reason="scope").inc()
            log.warning("admin request refused: token scope too small",
                        extra=fields(peer=peer, who=principal.name, method=method, path=path,
                                     scope=principal.scope.name.lower(), needs=needed.name.lower()))
            await _reply(send, 403, b"forbidden: this token's scope does not allow it", [])
            return
        if principal.tenant is not None and path.startswith(TENANT_DENIED_PREFIXES):
            m.ADMIN_REFUSED.labels(reason="tenant").inc()
            log.warning("admin request refused: not for a tenant token",
                        extra=fields(peer=peer, who=principal.name, method=method, path=path))
            await _reply(send, 403, b"forbidden: operator tokens only", [])
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def _reply(send: Any, status: int, text: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    body = b'{"detail":"' + text + b'"}'
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
