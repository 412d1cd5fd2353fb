"""Wire-format helpers of the engine: G.711 from the media plane's tables, one-shot resampling.

G.711 comes from `gateway.audio.g711` (bit-exact reference tables, shared with the media plane).
Resampling here is one-shot per utterance or per synthesized sentence (`scipy.signal.resample_poly`):
the engine never resamples live 20 ms frames, and it needs 22 050 Hz (espeak's rate), which the media
plane's streaming resampler does not offer.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from gateway.audio.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE

# Session audio formats: name -> (sample rate, bytes per sample).
FORMATS: dict[str, tuple[int, int]] = {
    "audio/pcm": (24000, 2),
    "audio/pcmu": (8000, 1),
    "audio/pcma": (8000, 1),
}


def resample(pcm: np.ndarray, fin: int, fout: int) -> np.ndarray:
    """Band-limited resampling of a whole int16 signal (an utterance or a sentence)."""
    if fin == fout or len(pcm) == 0:
        return pcm.astype(np.int16)
    g = gcd(fin, fout)
    y = resample_poly(pcm.astype(np.float64), fout // g, fin // g)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def decode(fmt: str, data: bytes) -> np.ndarray:
    """Wire bytes of a session format -> int16 samples at the format's rate."""
    if fmt == "audio/pcmu":
        return ULAW_DECODE[np.frombuffer(data, np.uint8)]
    if fmt == "audio/pcma":
        return ALAW_DECODE[np.frombuffer(data, np.uint8)]
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.int16)


def encode(fmt: str, pcm: np.ndarray) -> bytes:
    """int16 samples at the format's rate -> wire bytes."""
    table = ULAW_ENCODE if fmt == "audio/pcmu" else ALAW_ENCODE if fmt == "audio/pcma" else None
    if table is None:
        return pcm.astype("<i2").tobytes()
    return table[pcm.astype(np.int16).view(np.uint16)].tobytes()
