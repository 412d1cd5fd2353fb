"""What a Twilio caller's AI says first when they come back from a warm transfer nobody took
(twilio_warm.ReturningGreetings): taken once, by that caller only, and dropped when they never come back
(a bounded TTL on an injected clock), so nothing is kept for a caller who hung up."""

from __future__ import annotations

from gateway.handoff.twilio_warm import RETURNING_TTL_S, ReturningGreetings

WORDS = "I'm sorry, no one is available right now. I can keep helping you myself."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_taken_once_by_the_caller_it_was_kept_for():
    clock = Clock()
    kept = ReturningGreetings(ttl_s=60, clock=clock)
    kept.put("ho_aaaaaaaaaaaa", "CA1", WORDS)
    assert kept.take("ho_aaaaaaaaaaaa", "CA2") is None  # another call naming the handoff gets nothing
    clock.now += 59
    assert kept.take("ho_aaaaaaaaaaaa", "CA1") == WORDS
    assert kept.take("ho_aaaaaaaaaaaa", "CA1") is None  # once
    assert len(kept) == 0


def test_a_caller_who_never_comes_back_leaks_nothing():
    clock = Clock()
    kept = ReturningGreetings(ttl_s=60, clock=clock)
    for i in range(1000):  # callers who hung up while being taken back, one every 0.1 s
        clock.now = 1000.0 + i / 10
        kept.put(f"ho_{i:012d}", f"CA{i}", WORDS)
    clock.now = 1100.05  # the 400th was kept 60.05 s ago, the 401st 59.95 s ago
    assert len(kept) == 599  # only the last minute's are still kept
    assert kept.take("ho_000000000400", "CA400") is None
    assert kept.take("ho_000000000401", "CA401") == WORDS
    clock.now += 60
    assert len(kept) == 0


def test_kept_again_for_the_same_handoff_restarts_its_time():
    clock = Clock()
    kept = ReturningGreetings(ttl_s=60, clock=clock)
    kept.put("ho_aaaaaaaaaaaa", "CA1", "first")
    kept.put("ho_bbbbbbbbbbbb", "CA2", WORDS)
    clock.now += 30
    kept.put("ho_aaaaaaaaaaaa", "CA1", "second")
    clock.now += 40  # the first put of ho_a and ho_b are 70 s old, the second of ho_a 40 s
    assert kept.take("ho_bbbbbbbbbbbb", "CA2") is None
    assert kept.take("ho_aaaaaaaaaaaa", "CA1") == "second"


def test_the_default_ttl_is_bounded():
    assert 10 <= RETURNING_TTL_S <= 600
