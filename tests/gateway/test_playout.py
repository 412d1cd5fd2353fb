"""PlayoutClock on an injected clock: heard vs sent, lead, underruns, barge-in truncate point."""

import pytest

from gateway.audio.playout import PlayoutClock


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += ms / 1000.0


@pytest.fixture
def clock():
    return FakeClock()


def test_lead_caps_how_much_audio_is_in_flight(clock):
    p = PlayoutClock(clock, lead_ms=60)
    sent = 0
    while p.wants_frame():
        p.on_sent(20)
        sent += 1
    assert sent == 3 and p.queued_ms() == pytest.approx(60)
    clock.advance(20)
    assert p.wants_frame() and p.seconds_until_room() == 0
    p.on_sent(20)
    assert not p.wants_frame()
    assert p.seconds_until_room() == pytest.approx(0.020)


def test_heard_counts_only_what_has_played(clock):
    p = PlayoutClock(clock, lead_ms=60)
    p.begin_item("item_1")
    for _ in range(3):
        p.on_sent(20)
    assert p.item_heard_ms() == 0
    clock.advance(30)
    assert p.item_heard_ms() == 30
    clock.advance(500)  # long after: everything sent has played, never more
    assert p.item_heard_ms() == 60


def test_interrupt_returns_the_truncate_point_and_resets_the_item(clock):
    p = PlayoutClock(clock, lead_ms=60)
    p.begin_item("item_1")
    for _ in range(10):  # paced: one frame per 20 ms
        p.on_sent(20)
        clock.advance(20)
    p.on_sent(20)
    p.on_sent(20)  # 40 ms queued at the far end when the caller barges in
    assert p.interrupt() == 200
    assert p.item_id is None and p.item_sent_ms() == 0


def test_a_gap_in_the_middle_of_a_reply_is_an_underrun(clock):
    p = PlayoutClock(clock, lead_ms=60)
    p.on_sent(20, continuing=False)
    clock.advance(50)  # far end ran dry 30 ms ago
    assert p.on_sent(20, continuing=True)
    assert p.stats.underruns == 1 and p.stats.underrun_ms == pytest.approx(30)


def test_the_start_of_a_new_reply_after_silence_is_not_an_underrun(clock):
    p = PlayoutClock(clock, lead_ms=60)
    p.on_sent(20, continuing=False)
    clock.advance(5000)
    assert not p.on_sent(20, continuing=False)
    assert p.stats.underruns == 0


def test_lead_shorter_than_a_frame_is_refused(clock):
    with pytest.raises(ValueError):
        PlayoutClock(clock, lead_ms=10)
