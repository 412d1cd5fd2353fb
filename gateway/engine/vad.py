"""Server-side voice activity detection, sans-I/O, on the audio's own clock.

Frames are 20 ms of 8 kHz int16. Time is counted in audio samples, never wall-clock time, so the same
audio always gives the same `speech_started` / `speech_stopped` positions however fast it arrives.
webrtcvad-wheels (measured ~2 µs per frame on one x86-64 core) votes on each frame, gated by an energy
floor so that line hiss below the floor never opens a turn.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

RATE = 8000
FRAME_MS = 20
FRAME = RATE * FRAME_MS // 1000
_ONSET_WINDOW = 5  # frames looked at to declare speech (100 ms) ...
_ONSET_VOICED = 3  # ... of which this many must be voiced (a click or a cough tail is not a turn)


@dataclass(frozen=True)
class VadEvent:
    kind: str  # "start" | "stop"
    ms: int  # start: first voiced frame (before prefix padding); stop: end of the silence that ended it


def _unit(threshold: float) -> float:
    # JSON from a client may carry Infinity or NaN (json.loads accepts both): fall back to the default.
    t = float(threshold)
    return min(1.0, max(0.0, t)) if math.isfinite(t) else 0.5


def mode_for(threshold: float) -> int:
    """Realtime's 0..1 `threshold` -> webrtcvad aggressiveness 0..3 (0.5, the default, -> 2)."""
    return min(3, int(_unit(threshold) * 4))


def floor_dbfs(threshold: float) -> float:
    """Energy floor below which a frame is never speech: -60 dBFS at threshold 0, -30 at 1."""
    return -60.0 + 30.0 * _unit(threshold)


class TurnDetector:
    def __init__(self, threshold: float = 0.5, silence_duration_ms: int = 500) -> None:
        self._vad = webrtcvad.Vad(mode_for(threshold))
        self._floor = floor_dbfs(threshold)
        silence = float(silence_duration_ms)
        silence = min(silence, 60_000.0) if math.isfinite(silence) else 500.0
        self.silence_frames = max(1, -(-int(silence) // FRAME_MS))
        self.frames = 0  # frames seen since the session started
        self.in_speech = False
        self._recent: deque[bool] = deque(maxlen=_ONSET_WINDOW)
        self._silence = 0

    @property
    def silence_run_ms(self) -> int:
        """Unvoiced time since the last voiced frame of the turn in progress (0 outside a turn)."""
        return self._silence * FRAME_MS if self.in_speech else 0

    def reset(self) -> None:
        """Forget a turn in progress (buffer cleared or committed by the client); keep the clock."""
        self.in_speech = False
        self._recent.clear()
        self._silence = 0

    def _voiced(self, frame: np.ndarray) -> bool:
        power = float(np.dot(frame.astype(np.float64), frame.astype(np.float64))) / len(frame)
        if power <= 0.0 or 10.0 * np.log10(power / (32768.0 * 32768.0)) < self._floor:
            return False
        return self._vad.is_speech(frame.astype("<i2").tobytes(), RATE)

    def frame(self, frame: np.ndarray) -> VadEvent | None:
        """Feed exactly one 20 ms frame of 8 kHz int16; returns an event when a turn starts or ends."""
        voiced = self._voiced(frame)
        index = self.frames
        self.frames += 1
        if not self.in_speech:
            self._recent.append(voiced)
            if sum(self._recent) >= _ONSET_VOICED:
                first = index - len(self._recent) + 1 + list(self._recent).index(True)
                self.in_speech = True
                self._silence = 0
                self._recent.clear()
                return VadEvent("start", first * FRAME_MS)
            return None
        self._silence = 0 if voiced else self._silence + 1
        if self._silence >= self.silence_frames:
            self.in_speech = False
            self._silence = 0
            return VadEvent("stop", self.frames * FRAME_MS)
        return None
