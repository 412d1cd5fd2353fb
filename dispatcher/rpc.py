"""Kamailio JSON-RPC (jsonrpcs): over its UNIX datagram socket (the default) or over HTTP (opt-in).

The address is a URL: ``unix:/run/kamailio/kamailio_rpc.sock`` (kamailio.cfg RPC_SOCKET; file
permissions are the credential) or ``http://host:port/RPC`` (kamailio.cfg WITH_HTTP_RPC).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
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


# jsonrpcs answers in one datagram of at most ~64 kB (JSONRPC_DGRAM_BUF_SIZE).
_DGRAM_MAX = 1 << 17


def _dgram_call(path: str, body: bytes, timeout: float) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        # Linux autobind: an abstract reply address, so Kamailio (running as its own user) can answer
        # without a reply file anywhere on disk.
        s.bind("")
        s.settimeout(timeout)
        s.sendto(body, path)
        return s.recv(_DGRAM_MAX)


class KamailioRpc:
    """One client per CLI run; positional parameters as jsonrpcs expects."""

    def __init__(self, url: str, *, timeout: float = 5.0, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.socket_path = url[len("unix:"):] if url.startswith("unix:") else None
        if self.socket_path is None and not url.startswith(("http://", "https://")):
            raise ValueError(f"Kamailio RPC address {url!r}: expected unix:/path or http(s)://host:port/RPC")
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
        if self.socket_path is not None:
            return self._result(method, await self._call_dgram(body))
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
        return self._result(method, data)

    async def _call_dgram(self, body: dict[str, Any]) -> Any:
        path = self.socket_path or ""
        try:
            raw = await asyncio.to_thread(_dgram_call, path, json.dumps(body).encode(), self.timeout)
        except TimeoutError as exc:
            raise KamailioUnreachable(f"Kamailio JSON-RPC at {self.url} did not answer within "
                                      f"{self.timeout:g} s") from exc
        except OSError as exc:
            # ENOENT: not running (or RPC_SOCKET differs); EACCES: not in the socket's group.
            raise KamailioUnreachable(f"Kamailio JSON-RPC at {self.url} is unreachable: "
                                      f"{exc.strerror or exc}") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise KamailioRefused(str(body.get("method")), 0, "reply is not JSON") from exc

    @staticmethod
    def _result(method: str, data: Any) -> Any:
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
