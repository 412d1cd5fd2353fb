"""A handoff webhook receiver on this area's loopback addresses (127.0.4.x, free port): checks the
signature the way docs/handoff.md tells a receiver to, and can be told to fail the first N deliveries."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HOST = "127.0.4.10"


def verify(secret: bytes, headers: Any, body: bytes, max_age_s: float = 300) -> bool:
    ts = headers.get("X-Gateway-Timestamp", "")
    sig = headers.get("X-Gateway-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > max_age_s:
        return False
    want = "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


@dataclass
class Receiver:
    secret: bytes
    fail_first: int = 0
    fail_status: int = 503
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/handoff", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{HOST}:{port}/handoff"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"headers": dict(request.headers), "body": body,
                              "valid": verify(self.secret, request.headers, body)})
        if len(self.requests) <= self.fail_first:
            return web.Response(status=self.fail_status)
        return web.json_response({"ok": True})

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["valid"]]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
