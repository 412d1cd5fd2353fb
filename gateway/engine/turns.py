"""Turn-taking: the uncommitted input audio buffer and server VAD over it, on the audio's own clock.

`InputBuffer` takes wire bytes of the session's input format, cuts them into 20 ms frames, runs the
turn detector (`vad.TurnDetector`) and says where turns start and stop. It keeps only the audio a
commit can still reach: the current turn, plus prefix padding while nobody speaks. It knows nothing
about wire events or responses; the session turns `TurnStarted` / `TurnStopped` into them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import audio
from .config import DEFAULT_TURN_DETECTION, prefix_ms, silence_ms
from .vad import FRAME_MS, TurnDetector

MAX_BUFFER_MS = 120_000  # uncommitted input audio kept at most (a caller monologue, 2 minutes)
# A turn is recognised on its audio up to this much silence after the last voiced frame, not on the
# whole silence window: the words are all there, and recognition can start this early (`TurnPausing`)
# instead of when the window closes, which hides most of its time from the caller.
RECOGNISE_AFTER_SILENCE_MS = 200


@dataclass(frozen=True)
class TurnStarted:
    audio_start_ms: int  # prefix padding included


@dataclass(frozen=True)
class TurnStopped:
    audio_end_ms: int
    first_frame: int  # the turn's first buffered frame (what `take` commits from)
    trailing_frames: int = 0  # frames of the ending silence beyond RECOGNISE_AFTER_SILENCE_MS


@dataclass(frozen=True)
class TurnPausing:
    """The caller has been silent for RECOGNISE_AFTER_SILENCE_MS in a turn: the audio that will be
    recognised if the turn ends here is complete (`recognisable()`)."""

    first_frame: int


class InputBuffer:
    def __init__(self, fmt: str, turn_detection: dict[str, Any] | None) -> None:
        self.fmt = fmt
        self.turn_detection = turn_detection
        self.turn_item: str | None = None  # the item id announced at speech_started, used at commit
        self._pending = np.zeros(0, np.int16)  # native-rate samples not yet a whole 20 ms frame
        self._odd_byte = b""
        self._frames: list[np.ndarray] = []  # native-rate 20 ms frames of the uncommitted buffer
        self._start_frame = 0  # session frame index of _frames[0]
        self._turn_start_ms = 0
        self._vad = self._new_vad()

    def _new_vad(self) -> TurnDetector:
        td = self.turn_detection or DEFAULT_TURN_DETECTION
        vad = TurnDetector(threshold=td.get("threshold") or 0.5, silence_duration_ms=silence_ms(td))
        if getattr(self, "_vad", None) is not None:
            vad.frames = self._vad.frames  # the session's audio clock never goes back
        return vad

    @property
    def rate(self) -> int:
        return audio.FORMATS[self.fmt][0]

    @property
    def buffered_ms(self) -> int:
        return len(self._frames) * FRAME_MS

    @property
    def has_pending_frames(self) -> bool:
        return len(self._pending) >= self._frame_samples

    @property
    def _frame_samples(self) -> int:
        return self.rate * FRAME_MS // 1000

    def reconfigure(self, fmt: str, turn_detection: dict[str, Any] | None) -> None:
        """A new input format drops what was not committed (samples of two formats cannot mix); a new
        turn detection restarts the detector on the same clock."""
        format_changed = fmt != self.fmt
        vad_changed = turn_detection != self.turn_detection
        self.fmt, self.turn_detection = fmt, turn_detection
        if format_changed:
            self.clear()
        if format_changed or vad_changed:
            self._vad = self._new_vad()

    def append(self, raw: bytes) -> None:
        if self.fmt == "audio/pcm":
            raw = self._odd_byte + raw
            self._odd_byte = raw[len(raw) // 2 * 2 :]
        samples = audio.decode(self.fmt, raw)
        self._pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples

    def turns(self) -> Iterator[TurnStarted | TurnStopped | TurnPausing]:
        """Run the pending whole frames through turn detection, yielding turn boundaries as they occur.
        The consumer may stop early: the frames not yet run stay pending for the next call."""
        n = self._frame_samples
        while len(self._pending) >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            event = self._on_frame(frame)
            if event is not None:
                yield event

    def _early_frames(self) -> int:
        return min(RECOGNISE_AFTER_SILENCE_MS // FRAME_MS, self._vad.silence_frames)

    def _turn_first_frame(self) -> int:
        return max(0, self._turn_start_ms // FRAME_MS - self._start_frame)

    def recognisable(self, first_frame: int) -> np.ndarray:
        """The turn's audio so far, from `first_frame` (what a pause makes ready to recognise)."""
        frames = self._frames[first_frame:]
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def _on_frame(self, frame: np.ndarray) -> TurnStarted | TurnStopped | TurnPausing | None:
        self._frames.append(frame)
        td = self.turn_detection
        if td is None:
            limit = MAX_BUFFER_MS // FRAME_MS
            if len(self._frames) > limit:
                del self._frames[: len(self._frames) - limit]
                self._start_frame = self._vad.frames + 1 - len(self._frames)
            self._vad.frames += 1
            return None
        vad_frame = frame if len(frame) == 160 else frame.reshape(-1, 3).mean(axis=1).astype(np.int16)
        ev = self._vad.frame(vad_frame)
        if ev is None and not self._vad.in_speech:
            # Keep only what prefix padding (plus the onset window) can reach back to.
            keep = prefix_ms(td) // FRAME_MS + 8
            if len(self._frames) > keep:
                del self._frames[: len(self._frames) - keep]
            self._start_frame = self._vad.frames - len(self._frames)
        elif ev is not None and ev.kind == "start":
            self._turn_start_ms = max(0, ev.ms - prefix_ms(td), self._start_frame * FRAME_MS)
            return TurnStarted(self._turn_start_ms)
        elif ev is not None and ev.kind == "stop":
            trailing = self._vad.silence_frames - self._early_frames()
            return TurnStopped(ev.ms, self._turn_first_frame(), trailing)
        elif self._vad.in_speech and self._vad.silence_run_ms == self._early_frames() * FRAME_MS:
            if self._early_frames() < self._vad.silence_frames:
                return TurnPausing(self._turn_first_frame())
        elif self._vad.in_speech and len(self._frames) * FRAME_MS > MAX_BUFFER_MS:
            # A turn longer than the buffer: end it here rather than grow without bound.
            self._vad.reset()
            return TurnStopped(self._vad.frames * FRAME_MS, 0)
        return None

    def take(self, first_frame: int = 0) -> np.ndarray:
        """Commit: the buffered audio from `first_frame` on (native rate); the buffer starts afresh."""
        frames = self._frames[first_frame:]
        pcm = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        self._frames = []
        self._start_frame = self._vad.frames
        self.turn_item = None
        return pcm

    def end_turn(self) -> None:
        """The client commits by hand: forget a turn in progress, keep the clock."""
        self._vad.reset()

    def clear(self) -> None:
        self._frames, self._pending, self._odd_byte = [], np.zeros(0, np.int16), b""
        self._start_frame = self._vad.frames
        self.turn_item = None
        self._vad.reset()
