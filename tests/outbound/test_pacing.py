"""Pacing decisions on an injected clock: CPS spacing, the tenant cap with priorities and a maximum
wait, retry back-off, calling hours in the callee's zone, the do-not-call list."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.outbound.pacing import Backoff, CallingHours, CpsLimiter, DoNotCall, TenantSlots


def test_cps_limiter_spaces_starts_by_the_interval_and_never_bunches_after_idle():
    cps = CpsLimiter(1.0)
    assert [cps.reserve(10.0) for _ in range(3)] == [10.0, 11.0, 12.0]
    assert cps.reserve(11.5) == 13.0  # still behind the queue of reservations
    assert cps.reserve(100.0) == 100.0  # idle: at once, but no burst credit saved up
    assert cps.reserve(100.0) == 101.0
    fast = CpsLimiter(4.0)
    assert [fast.reserve(0.0) for _ in range(3)] == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError):
        CpsLimiter(0)


def test_tenant_slots_cap_then_priority_then_first_come():
    slots = TenantSlots(cap=2, max_wait=30)
    assert slots.request("a") and slots.request("b")
    assert not slots.request("low", priority=0)
    assert not slots.request("high", priority=5)
    assert not slots.request("low2", priority=0)
    assert slots.waiting == ["high", "low", "low2"]
    assert slots.release("a") == ["high"]
    assert slots.release("b") == ["low"]
    assert slots.active == {"high", "low"}
    assert slots.waiting == ["low2"]


def test_a_new_call_does_not_jump_a_queue_even_when_a_slot_is_free():
    slots = TenantSlots(cap=1, max_wait=30)
    assert slots.request("a")
    assert not slots.request("b")
    slots.active.discard("a")  # a slot frees without release() having run yet
    assert not slots.request("c")  # b is first in line
    assert slots.release("a") == ["b"]


def test_a_waiter_that_gave_up_is_skipped_when_a_slot_frees():
    slots = TenantSlots(cap=1, max_wait=10)
    slots.request("a")
    slots.request("b")
    slots.request("c")
    slots.cancel("b")  # its maximum wait is over
    assert slots.waiting == ["c"]
    assert slots.release("a") == ["c"]
    assert slots.active == {"c"}


def test_backoff_retries_busy_and_no_answer_only_doubling():
    b = Backoff(attempts=2, first_s=30)
    assert b.delay(1, "busy") == 30
    assert b.delay(2, "no_answer") == 60
    assert b.delay(3, "busy") is None  # two retries used
    assert b.delay(1, "failed") is None
    assert b.delay(1, "completed") is None


def test_calling_hours_in_the_callees_zone_across_dst():
    hours = CallingHours.parse("08:00-21:00", "America/New_York")
    # 12:30 UTC in July is 08:30 EDT: open. In January it is 07:30 EST: closed until 13:00 UTC.
    assert hours.open_at(datetime(2026, 7, 1, 12, 30, tzinfo=UTC))
    jan = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    assert not hours.open_at(jan)
    assert hours.next_open(jan) == datetime(2026, 1, 15, 13, 0, tzinfo=UTC)
    # After the window (22:00 EST = 03:00 UTC next day): the next morning's opening.
    late = datetime(2026, 1, 16, 3, 0, tzinfo=UTC)
    assert hours.next_open(late) == datetime(2026, 1, 16, 13, 0, tzinfo=UTC)
    assert CallingHours.parse("", "UTC").open_at(late)


@pytest.mark.parametrize("bad", ["8-21", "21:00-08:00", "08:00-08:00", "25:00-26:00"])
def test_calling_hours_refuse_malformed_windows(bad):
    with pytest.raises(ValueError):
        CallingHours.parse(bad, "UTC")


def test_unknown_time_zone_is_refused():
    with pytest.raises(ValueError, match="time zone"):
        CallingHours.parse("08:00-21:00", "Mars/Olympus")


def test_do_not_call_matches_on_digits_and_national_forms(tmp_path):
    f = tmp_path / "dnc.txt"
    f.write_text("# opted out\n+1 (555) 010-0199\n5550100777  # national\n\n")
    dnc = DoNotCall.from_file(f)
    assert len(dnc) == 2
    assert dnc.blocks("+15550100199")
    assert dnc.blocks("sip:+15550100199@carrier")
    assert dnc.blocks("5550100199")  # the same number without its country code
    assert dnc.blocks("5550100777")
    assert not dnc.blocks("+15550100198")
    assert not dnc.blocks("0199")  # too short to match on a suffix
