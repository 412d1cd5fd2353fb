"""Pacing of outbound calls: pure bookkeeping on an injected clock, no sockets, no asyncio sleeps of its
own (gateway/outbound/service.py waits on what these return).

- `CpsLimiter`: the trunk-wide calls-per-second limit. Twilio's Elastic SIP Trunking admits 1 call per
  second per trunk by default (https://www.twilio.com/docs/sip-trunking/capacity-planning); INVITEs
  sent faster are refused by the carrier, so the gateway spaces them itself: `reserve(now)` hands out
  start times at least 1/cps apart.
- `TenantSlots`: a tenant's concurrent outbound calls (default 5) with a priority queue (higher first,
  then first come) and a maximum wait. One tenant's queue never holds another tenant's calls.
- `Backoff`: when to retry after busy / no answer (doubling).
- `CallingHours`: the window in the callee's time zone (zoneinfo) and the next time it opens.
- `DoNotCall`: numbers never dialled.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/New_York)") from None


class CpsLimiter:
    """Start times for new calls, at most `cps` per second over the whole trunk."""

    def __init__(self, cps: float) -> None:
        if cps <= 0:
            raise ValueError("cps must be positive")
        self.interval = 1.0 / cps
        self._next = float("-inf")

    def reserve(self, now: float) -> float:
        """The time the next INVITE may leave (>= now); the slot is taken."""
        at = max(now, self._next)
        self._next = at + self.interval
        return at


@dataclass(order=True)
class _Waiter:
    priority: int  # negated: heapq pops the smallest
    seq: int
    key: str = field(compare=False)


class QueueTimeout(Exception):
    """A queued call waited longer than the tenant's maximum wait."""


class TenantSlots:
    """One tenant's concurrent outbound calls. `request()` either takes a slot at once (True) or queues
    the call; `release()` frees a slot and returns the keys that now got one (the highest priority
    waiting longest first); `cancel()` takes a waiter out (its maximum wait is over: the service's
    `asyncio.wait_for` on the grant, bounded by `max_wait`)."""

    def __init__(self, cap: int, max_wait: float) -> None:
        self.cap = cap
        self.max_wait = max_wait
        self.active: set[str] = set()
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> list[str]:
        return [w.key for w in sorted(self._queue)]

    def request(self, key: str, priority: int = 0) -> bool:
        if len(self.active) < self.cap and not self._queue:
            self.active.add(key)
            return True
        heapq.heappush(self._queue, _Waiter(-priority, next(self._seq), key))
        return False

    def release(self, key: str) -> list[str]:
        self.active.discard(key)
        self.cancel(key)
        granted = []
        while self._queue and len(self.active) < self.cap:
            waiter = heapq.heappop(self._queue)
            self.active.add(waiter.key)
            granted.append(waiter.key)
        return granted

    def cancel(self, key: str) -> None:
        before = len(self._queue)
        self._queue = [w for w in self._queue if w.key != key]
        if len(self._queue) != before:
            heapq.heapify(self._queue)



@dataclass(frozen=True)
class Backoff:
    attempts: int  # retries after the first try
    first_s: float
    factor: float = 2.0
    retry_on: frozenset[str] = frozenset({"busy", "no_answer"})

    def delay(self, attempt: int, state: str) -> float | None:
        """Seconds before try number `attempt + 1` after try `attempt` (1-based) ended in `state`, or None
        when there is no retry."""
        if state not in self.retry_on or attempt > self.attempts:
            return None
        return self.first_s * self.factor ** (attempt - 1)


_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class CallingHours:
    """A daily window, e.g. 08:00-21:00, in one time zone; None window = any time."""

    start: time | None
    end: time | None
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str, tz: str) -> CallingHours:
        zi = zone(tz)
        text = text.strip()
        if not text:
            return cls(None, None, zi)
        m = _HOURS.match(text)
        if not m:
            raise ValueError(f"calling hours {text!r}: expected HH:MM-HH:MM, e.g. 08:00-21:00")
        start = time(int(m.group(1)), int(m.group(2)))
        end = time(23, 59, 59) if m.group(3) == "24" else time(int(m.group(3)), int(m.group(4)))
        if end <= start:
            raise ValueError(f"calling hours {text!r}: the end must be after the start")
        return cls(start, end, zi)

    def open_at(self, when: datetime) -> bool:
        if self.start is None or self.end is None:
            return True
        local = when.astimezone(self.tz).time()
        return self.start <= local < self.end

    def next_open(self, when: datetime) -> datetime:
        """`when` itself if the window is open then, else the next opening (an aware datetime)."""
        if self.open_at(when) or self.start is None:
            return when
        local = when.astimezone(self.tz)
        day = local.date()
        if local.time() >= self.start:  # after today's window: tomorrow's opening
            day += timedelta(days=1)
        opening = datetime.combine(day, self.start, tzinfo=self.tz)
        return opening.astimezone(when.tzinfo) if when.tzinfo else opening


def normalize_number(number: str) -> str:
    """Digits with a leading + kept: how numbers are compared (do-not-call, caller IDs)."""
    number = number.strip()
    if number.startswith(("sip:", "sips:")):
        number = number.split(":", 1)[1].split("@", 1)[0]
    digits = re.sub(r"[^0-9]", "", number)
    return ("+" + digits) if number.startswith("+") else digits


class DoNotCall:
    """Numbers never dialled. Compared on digits, so `+1 (555) 010-0199` matches `+15550100199`; a
    national form without the + is matched on its trailing digits too (a list written with country
    codes still blocks a request without)."""

    def __init__(self, numbers: Iterable[str] = ()) -> None:
        self._numbers: set[str] = set()
        for n in numbers:
            self.add(n)

    def add(self, number: str) -> None:
        norm = normalize_number(number)
        if norm:
            self._numbers.add(norm.lstrip("+"))

    def __len__(self) -> int:
        return len(self._numbers)

    def blocks(self, number: str) -> bool:
        digits = normalize_number(number).lstrip("+")
        if not digits:
            return False
        if digits in self._numbers:
            return True
        return any(len(d) > len(digits) >= 7 and d.endswith(digits) for d in self._numbers)

    @classmethod
    def from_file(cls, path: Path | None) -> DoNotCall:
        if path is None:
            return cls()
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls(line.split("#", 1)[0] for line in lines if line.split("#", 1)[0].strip())
