"""Wire-format helpers of the engine: G.711 from the media plane's tables, one-shot resampling.

G.711 comes from `gateway.audio.g711` (bit-exact reference tables, shared with the media plane).
Resampling here is one-shot per utterance or per synthesized sentence (a numpy polyphase FIR, Kaiser
windowed sinc): the engine never resamples live 20 ms frames, and it needs 22 050 Hz (espeak's rate),
which the media plane's streaming resampler does not offer. numpy rather than scipy.signal because
importing scipy.signal costs ~1 s of `gateway model` start-up.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

from gateway.audio.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE

# Session audio formats: name -> (sample rate, bytes per sample).
FORMATS: dict[str, tuple[int, int]] = {
    "audio/pcm": (24000, 2),
    "audio/pcmu": (8000, 1),
    "audio/pcma": (8000, 1),
}


_TAPS_PER_SIDE = 10  # zero crossings of the sinc kept on each side of the centre
_KAISER_BETA = 8.6  # ~-90 dB stop band
_BLOCK = 8192  # output samples computed at once


@lru_cache(maxsize=16)
def _phases(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase bank (up, taps) of a low-pass at the lower Nyquist, designed on the up-sampled grid."""
    cutoff = 0.95 / max(up, down)  # of the up-sampled Nyquist; 5 % transition band
    half = _TAPS_PER_SIDE * max(up, down)
    n = np.arange(-half, half + 1)
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(len(n), _KAISER_BETA) * up
    taps = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    return h.reshape(taps, up).T.astype(np.float32), half  # bank[p, k] = h[p + k * up]


def resample(pcm: np.ndarray, fin: int, fout: int) -> np.ndarray:
    """Band-limited resampling of a whole int16 signal (an utterance or a sentence), zero phase."""
    if fin == fout or len(pcm) == 0:
        return pcm.astype(np.int16)
    g = gcd(fin, fout)
    up, down = fout // g, fin // g
    bank, half = _phases(up, down)
    taps = bank.shape[1]
    n_out = -(-len(pcm) * up // down)
    # Output n sits at up-sampled position n*down + half (the filter's centre): x[j] contributes with
    # h[t - j*up] where t = n*down + half, so phase = t % up and the newest input index is t // up.
    pad = taps
    x = np.concatenate([np.zeros(pad, np.float32), pcm.astype(np.float32), np.zeros(pad + 1, np.float32)])
    y = np.empty(n_out, np.float32)
    # In blocks: the gathered (outputs x taps) matrix of a whole two-minute turn would be ~0.5 GB.
    for start in range(0, n_out, _BLOCK):
        t = np.arange(start, min(n_out, start + _BLOCK)) * down + half
        idx = (t // up)[:, None] - np.arange(taps)[None, :] + pad
        y[start : start + len(t)] = np.einsum("nk,nk->n", x[idx], bank[t % up])
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
