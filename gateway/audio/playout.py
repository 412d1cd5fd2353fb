"""Per-call playout clock: what the caller has heard, as opposed to what we have sent.

mod_audio_stream (voxcom fork / commercial build) plays `streamAudio` through a 20 ms write buffer that
back-pressures the socket, so anything sent early waits in kernel buffers and *will* be played; it cannot
be cleared. The gateway therefore keeps only a small lead of audio in flight and counts audio as heard
when the far end must have played it. On barge-in that count is the truncate point for the model.

Pure: time comes from an injected `clock()` returning seconds (monotonic), so tests drive it by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class PlayoutStats:
    sent_ms: float = 0.0
    underruns: int = 0
    underrun_ms: float = 0.0


class PlayoutClock:
    """Models the far end's playout queue: audio plays back-to-back at real time from when it arrives."""

    def __init__(self, clock: Callable[[], float], *, lead_ms: float = 60.0, frame_ms: float = 20.0) -> None:
        if lead_ms < frame_ms:
            raise ValueError("lead_ms must be at least one frame")
        self._clock = clock
        self.lead_ms = lead_ms
        self.frame_ms = frame_ms
        self._play_end = 0.0  # clock time at which everything sent so far has been played
        self._item_id: str | None = None
        self._item_sent_ms = 0.0
        self.stats = PlayoutStats()

    # -- queries -------------------------------------------------------------------------------------
    def queued_ms(self) -> float:
        """Audio sent but not yet played by the far end."""
        return max(0.0, (self._play_end - self._clock()) * 1000.0)

    def wants_frame(self) -> bool:
        """True while one more frame fits under the lead."""
        return self.queued_ms() + self.frame_ms <= self.lead_ms + 1e-6

    def seconds_until_room(self) -> float:
        """How long until the next frame may be sent without exceeding the lead."""
        return max(0.0, (self.queued_ms() + self.frame_ms - self.lead_ms) / 1000.0)

    @property
    def item_id(self) -> str | None:
        return self._item_id

    def item_heard_ms(self) -> int:
        """Milliseconds of the current item the caller has heard (never more than was sent)."""
        return int(max(0.0, self._item_sent_ms - self.queued_ms()))

    def item_sent_ms(self) -> float:
        return self._item_sent_ms

    # -- updates -------------------------------------------------------------------------------------
    def begin_item(self, item_id: str | None) -> None:
        """Audio that follows belongs to a new model output item (truncate counts restart at 0)."""
        self._item_id = item_id
        self._item_sent_ms = 0.0

    def on_sent(self, duration_ms: float, *, continuing: bool = True) -> bool:
        """Record `duration_ms` of audio handed to the socket. Returns True if it was an underrun:
        the far end had run dry in the middle of a reply (`continuing`), so the caller heard a gap."""
        now = self._clock()
        underrun = False
        if self._play_end < now:
            gap_ms = (now - self._play_end) * 1000.0
            # A gap shorter than a millisecond is scheduling noise, not an audible drop-out.
            if continuing and self.stats.sent_ms > 0 and gap_ms >= 1.0:
                underrun = True
                self.stats.underruns += 1
                self.stats.underrun_ms += gap_ms
            self._play_end = now
        self._play_end += duration_ms / 1000.0
        self._item_sent_ms += duration_ms
        self.stats.sent_ms += duration_ms
        return underrun

    def interrupt(self) -> int:
        """Barge-in: we stop sending now. Returns the heard ms of the current item (the truncate point).
        What is already queued at the far end still plays (it cannot be recalled); the next reply starts
        after it."""
        heard = self.item_heard_ms()
        self._item_id = None
        self._item_sent_ms = 0.0
        return heard
