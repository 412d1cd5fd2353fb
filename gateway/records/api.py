"""Admin API routes over the record store (read scope; erasure is audited).

    GET    /records                  filter: caller, outcome, tenant, profile, since, until; limit/offset
    GET    /records/export           the same filters, as JSON (default) or CSV (format=csv)
    GET    /records/{call_id}        the record with its turns and events
    GET    /callers/{caller}/memory  what the gateway remembers about a caller (number or conversation id)
    DELETE /callers/{caller}         erase the caller's records and memory (audited, counts returned)
    GET    /records-audit            erasures and retention runs

Everything here was redacted before it was stored; nothing is redacted again on the way out, and
nothing in clear exists to leak. Scopes come from the admin API's authentication, which runs before
routing and scopes by method: the GET routes need `read`, the erasure (DELETE) needs `control`; the
erasure's audit row names the authenticated token when there is one.

Tenants (gateway/tenants.py): every record carries its tenant. A tenant's token sees, reads, exports
and erases only its tenant's records and memory: another tenant's record is a 404, exactly like a
record that does not exist, so call ids say nothing across tenants; a `tenant=` filter naming another
tenant matches nothing. The operator's tokens see every tenant; their `tenant=` picks one (memory is
kept per tenant, so `GET /callers/{caller}/memory` reads the `default` tenant's unless `tenant=` names
another, and `DELETE /callers/{caller}` erases the caller from every tenant unless `tenant=` names one).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response

from gateway.auth import OPEN, Principal
from gateway.records.recorder import Records
from gateway.records.store import DEFAULT_TENANT, RecordFilter, StoreError

EXPORT_COLUMNS = (
    "call_id",
    "started_at",
    "ended_at",
    "duration_s",
    "profile",
    "tenant",
    "caller",
    "callee",
    "sip_call_id",
    "worker",
    "outcome",
    "intent",
    "sentiment",
    "escalation",
    "summary",
)
MAX_PAGE = 500
MAX_EXPORT = 10_000


def records_router(records: Records) -> APIRouter:
    r = APIRouter(tags=["records"])

    def _filter(
        caller: str | None,
        outcome: str | None,
        tenant: str | None,
        profile: str | None,
        since: float | None,
        until: float | None,
        limit: int,
        offset: int,
    ) -> RecordFilter:
        return RecordFilter(
            caller=caller,
            outcome=outcome,
            tenant=tenant,
            profile=profile,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )

    def _who(request: Request) -> Principal:
        return getattr(request.state, "principal", None) or OPEN

    def _scoped(request: Request, tenant: str | None) -> tuple[bool, str | None]:
        """(may match anything, the tenant to filter on) for a request's `tenant=` filter."""
        own = _who(request).tenant
        if own is None:
            return True, tenant
        return tenant in (None, own), own

    async def _guard(coro: Any) -> Any:
        try:
            return await coro
        except StoreError as exc:
            raise HTTPException(503, f"record store unavailable: {exc}") from None

    @r.get("/records", summary="call records, newest first")
    async def list_records(
        request: Request,
        caller: str | None = Query(None, max_length=128, description="number or conversation id"),
        outcome: str | None = Query(None, max_length=64),
        tenant: str | None = Query(None, max_length=128),
        profile: str | None = Query(None, max_length=128),
        since: float | None = Query(None, description="unix seconds"),
        until: float | None = Query(None, description="unix seconds"),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        ok, tenant = _scoped(request, tenant)
        f = _filter(caller, outcome, tenant, profile, since, until, limit + 1, offset)
        rows = await _guard(records.list_records(f)) if ok else []
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = None
        if more:
            q = dict(request.query_params) | {"offset": str(offset + limit), "limit": str(limit)}
            nxt = "/records?" + "&".join(f"{k}={v}" for k, v in q.items())
        return {"records": rows, "limit": limit, "offset": offset, "next": nxt}

    @r.get("/records/export", summary="export records as JSON or CSV")
    async def export(
        request: Request,
        format: Literal["json", "csv"] = "json",  # noqa: A002 - the query parameter's public name
        caller: str | None = Query(None, max_length=128),
        outcome: str | None = Query(None, max_length=64),
        tenant: str | None = Query(None, max_length=128),
        profile: str | None = Query(None, max_length=128),
        since: float | None = None,
        until: float | None = None,
        limit: int = Query(MAX_EXPORT, ge=1, le=MAX_EXPORT),
    ) -> Response:
        ok, tenant = _scoped(request, tenant)
        rows = (
            await _guard(
                records.list_records(_filter(caller, outcome, tenant, profile, since, until, limit, 0))
            )
            if ok
            else []
        )
        if format == "json":
            return Response(
                json.dumps(rows),
                media_type="application/json",
                headers={"Content-Disposition": 'attachment; filename="records.json"'},
            )
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(EXPORT_COLUMNS)
        for row in rows:
            a = row.get("analysis") or {}
            flat = row | {
                "intent": a.get("intent"),
                "sentiment": a.get("sentiment"),
                "escalation": a.get("escalation"),
                "summary": a.get("summary"),
            }
            w.writerow([_csv_cell(flat.get(c)) for c in EXPORT_COLUMNS])
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="records.csv"'},
        )

    @r.get("/records/{call_id}", summary="one call record with its turns and events")
    async def get_record(call_id: str, request: Request) -> dict[str, Any]:
        rec = await _guard(records.get_record(call_id, _who(request).tenant))
        if rec is None:
            raise HTTPException(404, f"no record of call {call_id}")
        return rec  # type: ignore[no-any-return]

    @r.get("/callers/{caller}/memory", summary="what is remembered about a caller")
    async def memory(
        caller: str, request: Request, tenant: str | None = Query(None, max_length=128)
    ) -> dict[str, Any]:
        ok, tenant = _scoped(request, tenant)
        mem = await _guard(records.get_memory(caller, tenant or DEFAULT_TENANT)) if ok else None
        if mem is None:
            raise HTTPException(404, "nothing remembered about this caller")
        mem["caller"] = caller
        return mem  # type: ignore[no-any-return]

    @r.delete(
        "/callers/{caller}",
        summary="erase a caller's records and memory (audited)",
    )
    async def forget(
        caller: str, request: Request, tenant: str | None = Query(None, max_length=128)
    ) -> dict[str, Any]:
        # The admin token's name when tokens are on; on an open loopback API (no tokens) the operator may
        # name themselves with X-Operator, else the peer address.
        principal = getattr(request.state, "principal", None)
        actor = (
            (principal.name if principal is not None and principal is not OPEN else None)
            or request.headers.get("X-Operator")
            or (request.client.host if request.client else "admin-api")
        )
        ok, tenant = _scoped(request, tenant)
        if not ok:
            raise HTTPException(404, "nothing remembered about this caller")
        counts = await _guard(records.forget(caller, actor=f"admin-api:{actor}"[:128], tenant=tenant))
        return {"ok": True, "erased": counts}

    @r.get("/records-audit", summary="erasures and retention runs")
    async def audit(request: Request, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return list(await _guard(records.audit_log(limit, _who(request).tenant)))

    return r


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    s = str(v)
    # A cell that a spreadsheet would run as a formula (CSV injection, OWASP) is quoted with a tick.
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(s) else s


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
