"""The process-wide speech parts every session shares: one synthesiser, one transcriber.

Loaded once, before the engine listens, so the first caller pays no start-up cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import audio
from .asr import RATE as ASR_RATE
from .asr import Recognition, WhisperTranscriber
from .tts import EspeakSynth

# A turn longer than this is cut to its first part before transcription: a caller's question is seconds
# long, and the cost grows with the audio (measured ~0.7 s of CPU for 15 s), so one monologue, or a
# session streaming noise, holds a recognition worker for a bounded time.
MAX_TURN_MS = 15_000


@dataclass
class Engines:
    """The speech parts. `recognise` here runs in the calling thread; the server runs it in worker
    processes instead (`recognition.RecognitionPool`), so decoding never blocks the event loop."""

    synth: EspeakSynth | None
    transcriber: WhisperTranscriber | None = None
    # Load the transcriber on first use when none was given (the server's own process needs it only
    # when recognition runs in-process: `asr_workers` 0, or sessions that recognise inline).
    lazy: bool = True
    # Per profile, the words its callers are likely to say (`dialogue.asr_prompt`), to bias recognition.
    contexts: dict[str, str] = field(default_factory=dict)

    def recognise(self, profile: str, pcm: np.ndarray, rate: int) -> Recognition | None:
        """What the caller said in `pcm` (int16 at `rate`), with the profile's vocabulary as context; None
        when there is no transcriber."""
        if self.transcriber is None:
            if not self.lazy:
                return None
            self.transcriber = WhisperTranscriber()
        cpu0 = time.process_time()
        pcm = pcm[: MAX_TURN_MS * rate // 1000]
        result = self.transcriber.transcribe(audio.resample(pcm, rate, ASR_RATE), self.contexts.get(profile))
        return replace(result, cpu_ms=round((time.process_time() - cpu0) * 1000, 1))
