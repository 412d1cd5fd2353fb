"""The call registry: admission, the live calls, drain. One per process; the admin API reads it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway import metrics as m
from gateway.log import fields

if TYPE_CHECKING:
    from gateway.call.session import CallSession

log = logging.getLogger("gateway.registry")


class Refused(Exception):
    """A new call the registry will not take; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CallRegistry:
    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.calls: dict[str, CallSession] = {}
        self.accepting = False  # until start-up has finished, and again once draining

    def admit(self, key: str | None = None) -> None:
        """Raise `Refused` unless one more call (with channel `key`, when known) may start."""
        if not self.accepting:
            raise Refused("draining", "gateway is draining")
        if key is not None and key in self.calls:
            raise Refused("duplicate", "a stream for this call is live")
        if len(self.calls) >= self.max_calls:
            raise Refused("capacity", "at capacity")

    def get(self, key: str) -> CallSession | None:
        """By registry key or by the call's own id (a Twilio call is keyed before its CallSid is known)."""
        found = self.calls.get(key)
        if found is None:
            found = next((s for s in list(self.calls.values()) if s.uuid == key), None)
        return found

    async def run(self, key: str, session: CallSession) -> None:
        """Run one call to its end; it is live (listed, counted) meanwhile."""
        self.calls[key] = session
        try:
            await session.run()
        finally:
            if self.calls.get(key) is session:
                del self.calls[key]
            m.TRAFFIC.add_finished(session.stats)  # after leaving `calls`: counted once

    def live_stats(self) -> list[object]:
        return [s.stats for s in self.calls.values()]

    async def drain(self, timeout: float, close_code: int) -> None:  # noqa: ASYNC109 - the drain budget
        """Refuse new calls, let live ones finish, then end the rest."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.calls and loop.time() < deadline:  # noqa: ASYNC110 - calls end in many ways; poll
            await asyncio.sleep(0.05)
        if not self.calls:
            return
        log.warning("ending calls still live after the drain timeout", extra=fields(calls=len(self.calls)))
        for session in list(self.calls.values()):
            session.outcome = session.outcome or "shutdown"
        live = list(self.calls.values())
        await asyncio.gather(*(s.close(close_code, "gateway shutting down") for s in live),
                             return_exceptions=True)
        for _ in range(40):
            if not self.calls:
                break
            await asyncio.sleep(0.05)
