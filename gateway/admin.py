"""Admin API (FastAPI, its own port): health, readiness, Prometheus metrics, live calls, call verbs.
OpenAPI docs at /docs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gateway import __version__
from gateway.call.control import CallControlError
from gateway.metrics import REGISTRY

if TYPE_CHECKING:
    from gateway.serve import Gateway


class TargetBody(BaseModel):
    target: str = Field(
        ..., min_length=1, max_length=256,
        description="a transfer target name of the call's profile, or a dialplan extension / sip: URI",
    )


def make_admin_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="AI voice gateway admin API", version=__version__)

    def _call(uuid: str) -> Any:
        session = gateway.calls.get(uuid)
        if session is None:
            raise HTTPException(404, f"no live call {uuid}")
        return session

    def _control(session: Any) -> Any:
        if session.control is None:
            why = gateway.control_error or "call control unavailable (GATEWAY_ESL_WORKERS not set)"
            raise HTTPException(503, why)
        return session.control

    async def _verb(coro: Any) -> None:
        try:
            await coro
        except CallControlError as exc:
            # FreeSWITCH's own -ERR text; 400 when the verb refused the target before sending it
            status = exc.status if exc.status in (400, 404, 409, 502, 503, 504) else 502
            raise HTTPException(status, str(exc)) from None

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="accepting new streams")
    async def readyz() -> Response:
        ready = gateway.started and not gateway.draining
        return PlainTextResponse("ready\n" if ready else "not ready\n", status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/calls", summary="live calls")
    async def calls() -> list[dict[str, Any]]:
        return [s.info() for s in list(gateway.calls.values())]

    @app.get("/calls/{uuid}", summary="one live call")
    async def call(uuid: str) -> dict[str, Any]:
        return _call(uuid).info()

    @app.post("/calls/{uuid}/hangup", summary="end the call")
    async def hangup(uuid: str) -> dict[str, Any]:
        session = _call(uuid)
        await session.hangup("admin hangup")
        return {"ok": True, "uuid": uuid}

    @app.post("/calls/{uuid}/transfer", summary="blind transfer through FreeSWITCH")
    async def transfer(uuid: str, body: TargetBody) -> dict[str, Any]:
        session = _call(uuid)
        control = _control(session)
        target = (session.profile.resolve_target(body.target) if session.profile else None) or body.target
        await _verb(control.transfer(target))
        return {"ok": True, "uuid": uuid, "target": target}

    @app.post("/calls/{uuid}/conference", summary="bring a human in (conference, AI leg as coach)")
    async def conference(uuid: str, body: TargetBody) -> dict[str, Any]:
        session = _call(uuid)
        control = _control(session)
        target = (session.profile.resolve_target(body.target) if session.profile else None) or body.target
        await _verb(control.add_participant(target))
        return {"ok": True, "uuid": uuid, "target": target}

    return app
