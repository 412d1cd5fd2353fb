"""G.711 and resampling helpers private to the engine.

The media plane owns `gateway/audio/`; this is a small private copy so the engine does not depend on
it landing first (to be deduplicated). G.711 uses lookup tables built once at import from the ITU-T
G.711 segment rules, so it needs no `audioop` (gone in Python 3.13). Resampling here is one-shot per
utterance or per synthesized sentence (`scipy.signal.resample_poly`), which is exact and stateless:
the engine never resamples live 20 ms frames.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

_ULAW_BIAS = 0x84


def _ulaw_encode(x: np.ndarray) -> np.ndarray:
    # 14-bit reference encoder (ITU-T G.711 / Sun g711.c, as CPython's audioop): floor-shift first, so
    # negative inputs round the same way as every other implementation in the field.
    x14 = x.astype(np.int32) >> 2
    negative = x14 < 0
    mag = np.minimum(np.where(negative, -x14, x14), 8159) + 0x21
    seg = np.floor(np.log2(mag)).astype(np.int32) - 5  # mag >= 0x21 > 2**5
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))  # past the top: full scale
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def _ulaw_decode(code: np.ndarray) -> np.ndarray:
    c = ~code.astype(np.int32) & 0xFF
    exponent = (c >> 4) & 0x07
    mantissa = c & 0x0F
    mag = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(c & 0x80, -mag, mag).astype(np.int16)


def _alaw_encode(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int32) >> 3  # A-law works on 13-bit samples
    sign = np.where(x >= 0, 0x80, 0x00)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0xFFF)
    seg = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    seg = np.clip(seg, 0, 7)
    mantissa = np.where(seg == 0, mag >> 1, mag >> seg) & 0x0F
    return ((sign | (seg << 4) | mantissa) ^ 0x55).astype(np.uint8)


def _alaw_decode(code: np.ndarray) -> np.ndarray:
    c = code.astype(np.int32) ^ 0x55
    seg = (c >> 4) & 0x07
    mantissa = c & 0x0F
    mag = np.where(seg == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(seg - 1, 0))
    return np.where(c & 0x80, mag, -mag).astype(np.int16)


_ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16)
_ALL_CODES = np.arange(256, dtype=np.uint8)
ULAW_ENCODE = _ulaw_encode(_ALL_PCM)  # indexed by int16.view(uint16)
ULAW_DECODE = _ulaw_decode(_ALL_CODES)
ALAW_ENCODE = _alaw_encode(_ALL_PCM)
ALAW_DECODE = _alaw_decode(_ALL_CODES)


def ulaw_to_pcm(data: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(data, np.uint8)]


def pcm_to_ulaw(pcm: np.ndarray) -> bytes:
    return ULAW_ENCODE[pcm.astype(np.int16).view(np.uint16)].tobytes()


def alaw_to_pcm(data: bytes) -> np.ndarray:
    return ALAW_DECODE[np.frombuffer(data, np.uint8)]


def pcm_to_alaw(pcm: np.ndarray) -> bytes:
    return ALAW_ENCODE[pcm.astype(np.int16).view(np.uint16)].tobytes()


@lru_cache(maxsize=16)
def _ratio(fin: int, fout: int) -> tuple[int, int]:
    from math import gcd

    g = gcd(fin, fout)
    return fout // g, fin // g


def resample(pcm: np.ndarray, fin: int, fout: int) -> np.ndarray:
    """One-shot band-limited resampling of a whole int16 signal (an utterance or a sentence)."""
    if fin == fout or len(pcm) == 0:
        return pcm.astype(np.int16)
    up, down = _ratio(fin, fout)
    y = resample_poly(pcm.astype(np.float64), up, down)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


# Session audio formats: name -> (sample rate, bytes per sample).
FORMATS: dict[str, tuple[int, int]] = {
    "audio/pcm": (24000, 2),
    "audio/pcmu": (8000, 1),
    "audio/pcma": (8000, 1),
}


def decode(fmt: str, data: bytes) -> np.ndarray:
    """Wire bytes of a session format -> int16 samples at the format's rate."""
    if fmt == "audio/pcmu":
        return ulaw_to_pcm(data)
    if fmt == "audio/pcma":
        return alaw_to_pcm(data)
    return np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.int16)


def encode(fmt: str, pcm: np.ndarray) -> bytes:
    """int16 samples at the format's rate -> wire bytes."""
    if fmt == "audio/pcmu":
        return pcm_to_ulaw(pcm)
    if fmt == "audio/pcma":
        return pcm_to_alaw(pcm)
    return pcm.astype("<i2").tobytes()
