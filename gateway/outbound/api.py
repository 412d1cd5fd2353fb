"""Admin API routes of outbound calls (control scope for POST, read for GET; gateway/auth.py):

    POST /calls                 place a call (202 + the call object; it is queued, then dialled)
    GET  /outbound/calls        the outbound calls of the token's tenant (every tenant for an operator)
    POST /incidents             page the on-call ladder of a profile (gateway/outbound/ladder.py)
    GET  /incidents/{id}        the ladder's steps and outcome

`GET /calls/{id}` and `POST /calls/{id}/hangup` (gateway/admin.py) also take an outbound call's id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from gateway.auth import Principal
from gateway.log import fields, pii
from gateway.outbound.service import DialRequest, OutboundRefused, OutboundService

if TYPE_CHECKING:
    from gateway.outbound.ladder import Ladders

audit_log = logging.getLogger("gateway.audit")


class DialBody(BaseModel):
    to: str = Field(..., min_length=2, max_length=33, description="the number to call, E.164 or digits")
    caller_id: str | None = Field(None, max_length=33,
                                  description="a number of the tenant (default: its first number)")
    profile: str | None = Field(None, max_length=64, description="agent profile (default: the tenant's)")
    variables: dict[str, str] = Field(default_factory=dict,
                                      description="custom variables handed to the agent session")
    priority: int = Field(0, ge=-100, le=100,
                          description="higher is dialled first when the tenant is at its cap")
    timezone: str | None = Field(None, max_length=64,
                                 description="the callee's IANA time zone (calling hours)")
    max_attempts: int | None = Field(None, ge=1, le=10, description="tries, retrying busy / no answer")
    ring_timeout_s: int | None = Field(None, ge=1, le=120)
    via: Literal["sip", "twilio"] = "sip"
    tenant: str | None = Field(None, max_length=32, description="operator tokens only: on behalf of")


class IncidentBody(BaseModel):
    profile: str = Field(..., max_length=64, description="the profile whose on-call ladder is paged")
    summary: str = Field(..., min_length=1, max_length=600, description="what the caller said")
    callback: str = Field("", max_length=33, description="the number to call the caller back on")
    call: str | None = Field(None, max_length=64, description="the live call to bridge on acknowledgement")
    force: bool = Field(False, description="page even within business hours")


def outbound_router(outbound: OutboundService, ladders: Ladders | None,
                    principal: Callable[[Request], Principal]) -> APIRouter:
    router = APIRouter()

    @router.post("/calls", status_code=202, summary="place an outbound call through the edge")
    async def dial(body: DialBody, request: Request) -> dict[str, Any]:
        who = principal(request)
        req = DialRequest(to=body.to, caller_id=body.caller_id, profile=body.profile,
                          variables=body.variables, priority=body.priority, timezone=body.timezone,
                          max_attempts=body.max_attempts, via=body.via, tenant=body.tenant,
                          ring_timeout_s=body.ring_timeout_s)
        try:
            call = outbound.place(req, who.tenant)
        except OutboundRefused as exc:
            audit_log.info("admin action", extra=fields(who=who.name, action="dial", target=pii(body.to),
                                                        result=str(exc.status), detail=str(exc)))
            raise HTTPException(exc.status, str(exc)) from None
        audit_log.info("admin action", extra=fields(who=who.name, action="dial", call=call.id,
                                                    target=pii(body.to), result="ok", tenant=call.tenant))
        return call.info()

    @router.get("/outbound/calls", summary="outbound calls (queued, ringing, live and recently ended)")
    async def outbound_calls(request: Request, state: str | None = None) -> list[dict[str, Any]]:
        who = principal(request)
        return [c.info() for c in outbound.for_tenant(who.tenant) if state is None or c.state == state]

    if ladders is not None:
        @router.post("/incidents", status_code=202, summary="page the on-call ladder of a profile")
        async def incident(body: IncidentBody, request: Request) -> dict[str, Any]:
            who = principal(request)
            try:
                run = ladders.page(body.profile, body.summary, body.callback, call_uuid=body.call,
                                   tenant=who.tenant, force=body.force)
            except OutboundRefused as exc:
                raise HTTPException(exc.status, str(exc)) from None
            audit_log.info("admin action", extra=fields(who=who.name, action="incident", call=run.id,
                                                        result="ok", tenant=run.tenant))
            return run.info()

        @router.get("/incidents/{incident_id}", summary="an incident's ladder steps and outcome")
        async def incident_info(incident_id: str, request: Request) -> dict[str, Any]:
            run = ladders.get(incident_id)
            if run is None or not principal(request).sees(run.tenant):
                # One that ended before this process started: its outcome from the record store.
                if run is None and outbound.records is not None:
                    who = principal(request)
                    kept = await outbound.records.get_outcome(incident_id, who.tenant, "ladder")
                    if kept is not None:
                        return kept | {"restored": True}  # type: ignore[no-any-return]
                raise HTTPException(404, f"no incident {incident_id}")
            return run.info()

    return router
