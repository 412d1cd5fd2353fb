"""Admin API (FastAPI, its own port): health, readiness, Prometheus metrics, live calls, call verbs.
OpenAPI docs at /docs. Every verb goes through the call object; call-control error kinds become HTTP
statuses here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from gateway import __version__
from gateway.call.control import CallControlError, ErrorKind
from gateway.call.registry import CallRegistry
from gateway.metrics import REGISTRY

HTTP_STATUS = {
    ErrorKind.INVALID: 400,  # refused before it reached the switch
    ErrorKind.CONFLICT: 409,
    ErrorKind.REFUSED: 502,  # the switch's own error text
    ErrorKind.UNREACHABLE: 503,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
}


class TargetBody(BaseModel):
    target: str = Field(
        ..., min_length=1, max_length=256,
        description="a transfer target name of the call's profile, or a dialplan extension / sip: URI",
    )


def make_admin_app(registry: CallRegistry, control_error: Callable[[], str | None] = lambda: None) -> FastAPI:
    app = FastAPI(title="AI voice gateway admin API", version=__version__)

    def _call(uuid: str) -> Any:
        session = registry.get(uuid)
        if session is None:
            raise HTTPException(404, f"no live call {uuid}")
        return session

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
        ready = registry.accepting
        return PlainTextResponse("ready\n" if ready else "not ready\n", status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/calls", summary="live calls")
    async def calls() -> list[dict[str, Any]]:
        return [s.info() for s in list(registry.calls.values())]

    @app.get("/calls/{uuid}", summary="one live call")
    async def call(uuid: str) -> dict[str, Any]:
        return _call(uuid).info()

    @app.post("/calls/{uuid}/hangup", summary="end the call")
    async def hangup(uuid: str) -> dict[str, Any]:
        await _call(uuid).hangup("admin hangup")
        return {"ok": True, "uuid": uuid}

    @app.post("/calls/{uuid}/transfer", summary="blind transfer (after what the agent said has played)")
    async def transfer(uuid: str, body: TargetBody) -> dict[str, Any]:
        target = await _verb(_call(uuid).transfer(body.target))
        return {"ok": True, "uuid": uuid, "target": target}

    @app.post("/calls/{uuid}/conference", summary="bring a human in (conference, AI leg as coach)")
    async def conference(uuid: str, body: TargetBody) -> dict[str, Any]:
        target = await _verb(_call(uuid).add_participant(body.target))
        return {"ok": True, "uuid": uuid, "target": target}

    return app
