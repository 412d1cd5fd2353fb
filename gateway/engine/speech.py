"""The process-wide speech parts every session shares: one synthesiser, one phrase recogniser per profile.

Loaded once, before the engine listens, so the first caller pays no start-up cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from . import audio
from .asr import RATE as ASR_RATE
from .asr import PhraseRecognizer, Recognition
from .tts import EspeakSynth


@dataclass
class Engines:
    """The speech parts. `recognise` here runs in the calling thread; the server runs it in worker
    processes instead (`recognition.RecognitionPool`), so decoding never blocks the event loop."""

    synth: EspeakSynth
    recognizers: dict[str, PhraseRecognizer]

    def recognise(self, profile: str, pcm: np.ndarray, rate: int) -> Recognition | None:
        """What the caller said in `pcm` (int16 at `rate`), by the profile's recogniser; None when the
        profile has none."""
        recognizer = self.recognizers.get(profile)
        if recognizer is None:
            return None
        if recognizer.too_long(len(pcm), rate):
            return Recognition("", 1.0, ())  # not one of the phrases, whatever it is: not decoded
        cpu0 = time.process_time()
        pcm16k = audio.resample(pcm, rate, ASR_RATE)
        result = recognizer.recognise(pcm16k)
        return replace(result, cpu_ms=round((time.process_time() - cpu0) * 1000, 1))
