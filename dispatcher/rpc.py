"""Kamailio JSON-RPC over HTTP (jsonrpcs + xhttp on the edge's private RPC listener)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx


class KamailioError(Exception):
    """Base class: the edge could not do what was asked."""


class KamailioUnreachable(KamailioError):
    """No HTTP answer from the RPC listener (down, wrong address, firewalled)."""


class KamailioRefused(KamailioError):
    """Kamailio answered with a JSON-RPC error (or HTTP refusal); carries its code and message."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: Kamailio refused ({code} {message})")
        self.method, self.code, self.message = method, code, message


class KamailioRpc:
    """One HTTP client per CLI run; positional parameters as jsonrpcs expects."""

    def __init__(self, url: str, *, timeout: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        # The edge closes every HTTP connection after its reply (set_reply_close in kamailio.cfg), so
        # a kept-alive connection would be dead on reuse: one connection per call.
        self._client = client or httpx.AsyncClient(
            timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0),
            headers={"Connection": "close"})
        self._ids = itertools.count(1)

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> KamailioRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, *params: object) -> Any:
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(self._ids)}
        try:
            reply = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise KamailioUnreachable(f"Kamailio JSON-RPC at {self.url} is unreachable: {reason}") from exc
        if reply.status_code != 200:
            raise KamailioRefused(method, reply.status_code, reply.text.strip()[:200] or reply.reason_phrase)
        try:
            data = reply.json()
        except ValueError as exc:
            raise KamailioRefused(method, reply.status_code, "reply is not JSON") from exc
        if not isinstance(data, dict):
            raise KamailioRefused(method, 0, "reply is not a JSON-RPC object")
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            raise KamailioRefused(method, int(err.get("code", 0)), str(err.get("message", data["error"])))
        return data.get("result")

    # ---------------------------------------------------------------- dispatcher module

    async def dispatcher_list(self) -> list[dict[str, Any]]:
        """Flattened destinations: each DEST dict plus its set id under "SETID"."""
        result = await self.call("dispatcher.list")
        dests: list[dict[str, Any]] = []
        for record in (result or {}).get("RECORDS", []) or []:
            dset = record.get("SET", {})
            for target in dset.get("TARGETS", []) or []:
                dest = dict(target.get("DEST", {}))
                dest["SETID"] = dset.get("ID")
                dests.append(dest)
        return dests

    async def set_state(self, state: str, setid: int, uri: str) -> None:
        await self.call("dispatcher.set_state", state, setid, uri)

    async def reload(self, *, reload_delta: float = 5.0) -> None:
        """dispatcher.reload, waiting out Kamailio's rate limit (one reload per reload_delta s)."""
        deadline = time.monotonic() + reload_delta + 2.0
        while True:
            try:
                await self.call("dispatcher.reload")
                return
            except KamailioRefused as exc:
                if "ongoing reload" not in exc.message.lower() or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)
