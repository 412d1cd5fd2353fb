"""Media-plane admission: what one source address may take, and how long a connection may take to ask.

- `SourceAdmission`: per source address (in production, one FreeSWITCH worker) a cap on concurrent
  streams and a token bucket on new streams. A token holder flooding from one address is refused
  cheaply (HTTP 429/503 before the upgrade, before any model session or greeting starts) while every
  other source keeps its share of `max_calls`.
- `TenantAdmission`: per tenant (gateway/tenants.py) a cap on concurrent inbound streams
  (`max_inbound`), so one tenant's flood cannot take the capacity another tenant's calls need. Refused
  exactly like the global cap (HTTP 503 before the upgrade); a Twilio call already at its voice webhook
  (`<Reject reason="busy"/>`, gateway/twilio_webhook.py), which reserves the slot its stream then takes.
- `HeaderDeadline`: a connection that has not delivered a complete upgrade request within
  `upgrade_header_timeout_s` is closed (half-open upgrades, slowloris), logged as one line.

Both are pure bookkeeping around an injected clock; gateway/media_server.py and gateway/serve.py wire
them to aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway import metrics as m
from gateway.call.registry import Refused
from gateway.log import fields

log = logging.getLogger("gateway.admission")

PRUNE_AT = 4096  # idle sources kept before the table is swept (bounds memory under address spraying)


@dataclass
class _Source:
    live: int
    tokens: float
    stamp: float


class SourceAdmission:
    def __init__(self, max_streams: int, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_streams = max_streams
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._sources: dict[str, _Source] = {}

    @property
    def tracked(self) -> int:
        """Sources with state kept (bounded: idle ones are swept past PRUNE_AT)."""
        return len(self._sources)

    def live(self, source: str) -> int:
        entry = self._sources.get(source)
        return entry.live if entry else 0

    def admit(self, source: str) -> None:
        """Take one stream slot for `source` or raise `Refused` (reason `source_rate` / `source_cap`)."""
        now = self._clock()
        entry = self._sources.get(source)
        if entry is None:
            if len(self._sources) >= PRUNE_AT:
                self._prune(now)
            entry = self._sources[source] = _Source(0, self.burst, now)
        entry.tokens = min(self.burst, entry.tokens + (now - entry.stamp) * self.rate)
        entry.stamp = now
        if entry.live >= self.max_streams:
            raise Refused("source_cap", f"source {source} already has {entry.live} streams (the limit)")
        if entry.tokens < 1.0:
            raise Refused("source_rate", f"source {source} opens streams faster than {self.rate:g}/s")
        entry.tokens -= 1.0
        entry.live += 1

    def release(self, source: str) -> None:
        entry = self._sources.get(source)
        if entry is not None and entry.live > 0:
            entry.live -= 1

    def _prune(self, now: float) -> None:
        full = [k for k, e in self._sources.items()
                if e.live == 0 and e.tokens + (now - e.stamp) * self.rate >= self.burst]
        for key in full:
            del self._sources[key]


RESERVATION_S = 30.0  # a Twilio call admitted at its webhook holds a slot this long for its stream


class TenantAdmission:
    """Concurrent inbound streams per tenant, against each tenant's `max_inbound` (None: no cap of its
    own, only the global GATEWAY_MAX_CALLS). Keyed by tenant name: a handful per install.

    A Twilio call is admitted at its voice webhook, before its stream exists: `reserve` holds a slot for
    its CallSid (counted like a live stream) until the stream's `start` turns it into a live one
    (`claim`), or until `reservation_s` pass without a stream (then the slot is free again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 reservation_s: float = RESERVATION_S) -> None:
        self._live: dict[str, int] = {}
        self._held: dict[str, tuple[str, float]] = {}  # CallSid -> (tenant, expiry on `clock`)
        self._clock = clock
        self.reservation_s = reservation_s

    def live(self, tenant: str) -> int:
        return self._live.get(tenant, 0)

    def reserved(self, tenant: str) -> int:
        """Slots held for calls admitted at the Twilio webhook whose stream has not started yet."""
        self._expire()
        return sum(1 for name, _ in self._held.values() if name == tenant)

    def taken(self, tenant: str) -> int:
        return self.live(tenant) + self.reserved(tenant)

    def full(self, tenant: str, cap: int | None) -> bool:
        return cap is not None and self.taken(tenant) >= cap

    def admit(self, tenant: str, cap: int | None, label: str) -> None:
        """Take one slot of `tenant` or raise `Refused` (reason `tenant_cap`)."""
        self._refuse_if_full(tenant, cap, label)
        self._take(tenant, label)

    def reserve(self, key: str, tenant: str, cap: int | None, label: str) -> None:
        """Hold one slot of `tenant` for the call `key` (a Twilio CallSid) or raise `Refused`. A tenant
        without a cap needs no reservation; the same key again (a retried webhook) renews its hold."""
        if cap is None:
            return
        self._expire()
        if self._held.get(key, ("",))[0] != tenant:
            self._held.pop(key, None)
            self._refuse_if_full(tenant, cap, label)
        self._held[key] = (tenant, self._clock() + self.reservation_s)

    def claim(self, key: str, tenant: str, cap: int | None, label: str, *, force: bool = False) -> None:
        """The stream of call `key` started: its reservation becomes a live slot; without one (it
        expired, or the webhook was not this gateway's) a slot is taken as `admit` would, or `Refused`.
        `force`: taken even past the cap (a call already admitted once, coming back to the agent)."""
        self._expire()
        held = self._held.pop(key, None)
        if held is None or held[0] != tenant:
            if not force:
                self._refuse_if_full(tenant, cap, label)
        self._take(tenant, label)

    def release(self, tenant: str, label: str) -> None:
        live = self._live.get(tenant, 0)
        if live > 0:
            self._live[tenant] = live - 1
            m.TENANT_ACTIVE_STREAMS.labels(tenant=label).set(live - 1)

    def _take(self, tenant: str, label: str) -> None:
        live = self._live.get(tenant, 0) + 1
        self._live[tenant] = live
        m.TENANT_ACTIVE_STREAMS.labels(tenant=label).set(live)

    def _refuse_if_full(self, tenant: str, cap: int | None, label: str) -> None:
        if self.full(tenant, cap):
            m.TENANT_STREAMS_REFUSED.labels(tenant=label).inc()
            raise Refused("tenant_cap", f"tenant {tenant} already has {self.live(tenant)} inbound streams "
                                        f"and {self.reserved(tenant)} Twilio calls starting (its limit)")

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expiry) in self._held.items() if expiry <= now]:
            tenant, _ = self._held.pop(key)
            log.info("twilio reservation expired: no stream came", extra=fields(call=key, tenant=tenant))


class HeaderDeadline:
    """Closes connections whose upgrade request is not complete in time. `watch()` is called when a
    connection is made, `passed()` when its request reached a handler (the header was complete)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pending: dict[Any, asyncio.TimerHandle] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def watch(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._pending[transport] = loop.call_later(self.timeout, self._expire, transport)

    def passed(self, transport: object) -> None:
        handle = self._pending.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def forget(self, transport: object) -> None:
        self.passed(transport)

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if self._pending.pop(transport, None) is None:
            return
        peer = transport.get_extra_info("peername")
        m.UPGRADES_ABORTED.labels(reason="header_timeout").inc()
        log.warning("connection closed: no complete upgrade request in time",
                    extra=fields(peer=peer[0] if isinstance(peer, tuple) else None, timeout_s=self.timeout))
        transport.abort()


class GuardedProtocol(asyncio.Protocol):
    """Puts `HeaderDeadline` in front of aiohttp's per-connection protocol (which cannot be subclassed
    from outside: `web.Server` builds it)."""

    __slots__ = ("_inner", "_deadline", "_transport")

    def __init__(self, inner: Any, deadline: HeaderDeadline) -> None:
        self._inner = inner
        self._deadline = deadline
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._deadline.watch(transport)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._deadline.forget(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
