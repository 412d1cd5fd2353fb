"""Admin API (FastAPI, its own port): health, readiness, Prometheus metrics, live calls, call verbs.
OpenAPI docs at /docs. Every verb goes through the call object; call-control error kinds become HTTP
statuses here and nowhere else.

Authentication (gateway/auth.py) runs as ASGI middleware before routing: /healthz, /readyz and the
docs are open, /metrics needs a `metrics` token, reading calls a `read` token, every verb a `control`
token (hangup, transfer, conference, handoff). Every control action leaves one audit line on the
`gateway.audit` logger: who (the token's name, never the secret), what, which call, the target, and the
result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gateway import __version__
from gateway import metrics as m
from gateway.auth import OPEN, AdminAuthMiddleware, Principal, TokenAuthority
from gateway.call.control import CallControlError, ErrorKind
from gateway.call.registry import CallRegistry
from gateway.handoff.api import handoffs_router
from gateway.handoff.record import HandoffStore
from gateway.log import fields, pii
from gateway.metrics import REGISTRY
from gateway.records.api import records_router
from gateway.records.recorder import Records

if TYPE_CHECKING:
    from gateway.outbound.ladder import Ladders
    from gateway.outbound.service import OutboundService
    from gateway.tenants import TenantSet

audit_log = logging.getLogger("gateway.audit")

HTTP_STATUS = {
    ErrorKind.INVALID: 400,  # refused before it reached the switch
    ErrorKind.CONFLICT: 409,
    ErrorKind.REFUSED: 502,  # the switch's own error text
    ErrorKind.UNREACHABLE: 503,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.FORBIDDEN: 403,  # the transfer policy (gateway/call/policy.py) does not allow the target
}


class TargetBody(BaseModel):
    target: str = Field(
        ..., min_length=1, max_length=256,
        description="a transfer target name of the call's profile, or a dialplan extension / sip: URI",
    )


class HandoffBody(BaseModel):
    reason: str = Field("operator handoff", max_length=200)
    urgency: str = Field("normal", pattern="^(low|normal|high)$")


def _principal(request: Request) -> Principal:
    return getattr(request.state, "principal", OPEN)


def make_admin_app(registry: CallRegistry, control_error: Callable[[], str | None] = lambda: None,
                   authority: TokenAuthority | None = None,
                   ready: Callable[[], bool] | None = None, records: Records | None = None,
                   outbound: OutboundService | None = None, tenants: TenantSet | None = None,
                   ladders: Ladders | None = None, handoffs: HandoffStore | None = None) -> FastAPI:
    app = FastAPI(title="AI voice gateway admin API", version=__version__)
    app.add_middleware(AdminAuthMiddleware, authority=authority or TokenAuthority([]))
    if records is not None:  # call records (gateway/records/api.py): GET routes read scope, DELETE control
        app.include_router(records_router(records))
    if outbound is not None:  # POST /calls, GET /outbound/calls, the ladder (gateway/outbound/api.py)
        from gateway.outbound.api import outbound_router

        app.include_router(outbound_router(outbound, ladders, _principal))
    if handoffs is not None:  # GET /handoffs/{id}: read scope (gateway/handoff/api.py)
        app.include_router(handoffs_router(handoffs))
    is_ready = ready or (lambda: registry.accepting)

    async def _audited(request: Request, action: str, uuid: str, target: str | None,
                       coro_factory: Any) -> Any:
        """Run one control action and write its audit line, whatever the outcome."""
        who = _principal(request)
        peer = request.client.host if request.client else None
        result, detail = "ok", None
        try:
            return await coro_factory()
        except HTTPException as exc:
            result, detail = str(exc.status_code), exc.detail
            raise
        except Exception as exc:
            result, detail = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            m.ADMIN_ACTIONS.labels(action=action, result="ok" if result == "ok" else "refused").inc()
            audit_log.info("admin action", extra=fields(who=who.name, peer=peer, action=action, call=uuid,
                                                        target=pii(target) if target else None,
                                                        result=result, detail=detail))

    def tenant_of(session: Any) -> str:
        """The tenant a live call belongs to (gateway/tenants.py): the outbound call that placed it, else
        its metadata, profile or dialled number."""
        if outbound is not None:
            placed = outbound.get(session.uuid)
            if placed is not None:
                return placed.tenant
        if tenants is None:
            return "default"
        meta = session.meta
        return tenants.owner(tenant=str(meta.extra.get("tenant") or "") or None,
                             profile=session.profile.name if session.profile else None,
                             number=meta.callee).name

    def _call(uuid: str, request: Request | None = None) -> Any:
        session = registry.get(uuid)
        who = _principal(request) if request is not None else OPEN
        if session is None or not who.sees(tenant_of(session)):
            # Another tenant's call is reported exactly like a call that does not exist.
            raise HTTPException(404, f"no live call {uuid}")
        return session

    def _info(session: Any) -> dict[str, Any]:
        info = session.info()
        info["tenant"] = tenant_of(session)
        placed = outbound.get(session.uuid) if outbound is not None else None
        if placed is not None:
            info["direction"], info["outbound"] = "outbound", placed.info()
        return info

    async def _verb(coro: Any) -> Any:
        try:
            return await coro
        except CallControlError as exc:
            detail = str(exc)
            if exc.kind is ErrorKind.UNAVAILABLE:
                detail = control_error() or "call control unavailable (GATEWAY_ESL_WORKERS not set)"
            raise HTTPException(HTTP_STATUS.get(exc.kind, 502), detail) from None

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="accepting new streams")
    async def readyz() -> Response:
        ready = is_ready()
        return PlainTextResponse("ready\n" if ready else "not ready\n", status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics (a tenant's token: only its tenant's series)")
    async def metrics(request: Request) -> Response:
        who = _principal(request)
        if who.tenant is None:
            return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
        label = tenants.get(who.tenant).metric_label if tenants is not None else who.tenant
        return Response(generate_latest(m.TenantView(REGISTRY, label)), media_type=CONTENT_TYPE_LATEST)

    @app.get("/calls", summary="live calls (a tenant token sees its tenant's only)")
    async def calls(request: Request) -> list[dict[str, Any]]:
        who = _principal(request)
        return [_info(s) for s in list(registry.calls.values()) if who.sees(tenant_of(s))]

    @app.get("/calls/{uuid}", summary="one call: live, or an outbound call by id at any stage")
    async def call(uuid: str, request: Request) -> dict[str, Any]:
        if outbound is not None:
            placed = outbound.get(uuid)
            if placed is not None and _principal(request).sees(placed.tenant):
                info = placed.info()
                live = registry.get(placed.uuid) if placed.uuid else None
                if live is not None:
                    info["live"] = live.info()
                return info
        try:
            return _info(_call(uuid, request))
        except HTTPException:
            # An outbound call that ended before this process started: its outcome from the store.
            if records is not None and outbound is not None:
                kept = await records.get_outcome(uuid, _principal(request).tenant, "outbound")
                if kept is not None:
                    return kept | {"restored": True}
            raise

    @app.post("/calls/{uuid}/hangup", summary="end the call (an outbound call also while queued or ringing)")
    async def hangup(uuid: str, request: Request) -> dict[str, Any]:
        async def act() -> None:
            if outbound is not None and registry.get(uuid) is None:
                placed = outbound.get(uuid)
                if placed is not None and _principal(request).sees(placed.tenant):
                    live = registry.get(placed.uuid) if placed.uuid else None
                    if live is None:
                        await outbound.hangup(placed)
                        return
                    await live.hangup("admin hangup")
                    return
            await _call(uuid, request).hangup("admin hangup")
        await _audited(request, "hangup", uuid, None, act)
        return {"ok": True, "uuid": uuid}

    @app.post("/calls/{uuid}/transfer", summary="blind transfer (after what the agent said has played)")
    async def transfer(uuid: str, body: TargetBody, request: Request) -> dict[str, Any]:
        target = await _audited(request, "transfer", uuid, body.target,
                                lambda: _verb(_call(uuid, request).transfer(body.target)))
        return {"ok": True, "uuid": uuid, "target": target}

    @app.post("/calls/{uuid}/conference", summary="bring a human in (conference, AI leg as coach)")
    async def conference(uuid: str, body: TargetBody, request: Request) -> dict[str, Any]:
        target = await _audited(request, "conference", uuid, body.target,
                                lambda: _verb(_call(uuid, request).add_participant(body.target)))
        return {"ok": True, "uuid": uuid, "target": target}

    @app.post("/calls/{uuid}/handoff",
              summary="hand the caller to a human as the profile's handoff block says (docs/handoff.md)")
    async def handoff(uuid: str, body: HandoffBody, request: Request) -> dict[str, Any]:
        from gateway.handoff.escalation import operator_handoff

        result = await _audited(request, "handoff", uuid, None,
                                lambda: _verb(operator_handoff(_call(uuid, request), body.reason,
                                                               body.urgency)))
        return {"ok": True, "uuid": uuid, **result}

    return app
