"""Model health for readiness: the gateway is ready only while its model endpoint answers.

`ModelProbe` opens a TCP connection to the model URL's host and port every `interval` seconds (and
closes it at once: no WebSocket session, nothing billed). A refused or timed-out connect marks the
model down at once, so `/readyz` answers 503 within one interval of the model dying, and the next
successful connect marks it up again. Calls that arrive meanwhile still get the fallback prompt and the
profile's fallback action: readiness tells the load balancer, it does not turn callers away.

The null backends have no endpoint and are always up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from gateway import metrics as m
from gateway.log import fields

log = logging.getLogger("gateway.health")

DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


def probe_address(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or DEFAULT_PORTS.get(parts.scheme, 443)


class ModelProbe:
    def __init__(self, url: str | None, interval: float, timeout: float) -> None:
        self.address = probe_address(url) if url else None
        self.interval = interval
        self.timeout = timeout
        self.up = True  # optimistic until the first probe (start-up runs one before announcing readiness)
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None and self.interval > 0

    async def check(self) -> bool:
        assert self.address is not None
        host, port = self.address
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.timeout)
        except (OSError, TimeoutError) as exc:
            self._set(False, f"{type(exc).__name__}: {exc}".strip())
            return False
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), self.timeout)
        self._set(True, None)
        return True

    def _set(self, up: bool, error: str | None) -> None:
        if up != self.up:
            host, port = self.address or ("", 0)
            if up:
                log.info("model reachable again: ready", extra=fields(host=host, port=port))
            else:
                log.error("model unreachable: not ready", extra=fields(host=host, port=port, error=error))
        self.up = up
        m.MODEL_UP.set(1 if up else 0)

    async def start(self) -> None:
        m.MODEL_UP.set(1)
        if not self.enabled:
            return
        await self.check()
        self._task = asyncio.create_task(self._loop(), name="model-probe")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # the probe must never die: log and try again next interval
                log.warning("model probe failed", extra=fields(error=f"{type(exc).__name__}: {exc}"))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
