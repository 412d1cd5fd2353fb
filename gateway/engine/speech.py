"""The process-wide speech parts every session shares: one synthesiser, one phrase recogniser per profile.

Loaded once, before the engine listens, so the first caller pays no start-up cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import audio
from .asr import RATE as ASR_RATE
from .asr import PhraseRecognizer, Recognition
from .tts import EspeakSynth


@dataclass
class Engines:
    synth: EspeakSynth
    recognizers: dict[str, PhraseRecognizer]

    def recognise(self, profile: str, pcm: np.ndarray, rate: int) -> Recognition | None:
        """What the caller said in `pcm` (int16 at `rate`), by the profile's recogniser; None when the
        profile has none."""
        recognizer = self.recognizers.get(profile)
        if recognizer is None:
            return None
        return recognizer.recognise(audio.resample(pcm, rate, ASR_RATE))
