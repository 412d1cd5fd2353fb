"""Offline speech recognition: pocketsphinx phone decoding matched against the profile's phrases.

Why this shape (measured on this machine, docs/engine.md "Speech recognition"): pocketsphinx 5.1.1 carries
its en-us acoustic model in the wheel, so nothing downloads. With its general language model it is
wrong on telephone-band speech; with a JSGF grammar of the agent's phrases it often drops the final word
or returns nothing on μ-law audio ("transfer me to billing" -> no result). Decoding *phones* (allphone
search, ~25 ms per utterance) and picking the phrase whose dictionary pronunciation is nearest by edit
distance recognised 14 of the 15 front-desk phrases through μ-law and, unlike a grammar, rejects speech
that is none of them (distance above `reject_above`), so an unrelated sentence gets the fallback reply
instead of being forced onto "goodbye".

The transcript reported is the matched phrase as written in the profile: this is a phrase spotter for a
scripted agent, not a dictation engine. A whisper-class model would transcribe open speech but costs
~0.5 s per utterance, which breaks the 700 ms end-of-speech -> first-audio budget on 2 cores.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

_NON_SPEECH = {
    "SIL",
    "+NSN+",
    "+SPN+",
    "+BREATH+",
    "+COUGH+",
    "+NOISE+",
    "+UH+",
    "+UM+",
    "<s>",
    "</s>",
    "(NULL)",
}
_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
RATE = 16000


def _model_dir() -> str:
    import pocketsphinx

    return os.path.join(os.path.dirname(pocketsphinx.__file__), "model", "en-us")


@lru_cache(maxsize=1)
def _dictionary() -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    with open(os.path.join(_model_dir(), "cmudict-en-us.dict"), encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if parts and "(" not in parts[0]:
                words.setdefault(parts[0], parts[1:])
    return words


def normalise(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept: "i'd")."""
    return re.findall(r"[a-z0-9']+", text.lower())


def phones_of(text: str) -> list[str]:
    """Dictionary pronunciation of a phrase; words missing from the dictionary contribute nothing."""
    d = _dictionary()
    out: list[str] = []
    for w in normalise(text):
        out.extend(d.get(w, []))
    return out


def phone_distance(hyp: list[str], ref: list[str]) -> float:
    """Edit distance normalised by the longer sequence; vowel-for-vowel swaps cost half (the commonest
    confusion of a phone decoder on narrowband speech)."""
    if not ref and not hyp:
        return 0.0
    prev = [float(j) for j in range(len(ref) + 1)]
    for i, h in enumerate(hyp, 1):
        cur = [float(i)]
        for j, r in enumerate(ref, 1):
            sub = 0.0 if h == r else (0.5 if h in _VOWELS and r in _VOWELS else 1.0)
            cur.append(min(prev[j] + 1.0, cur[j - 1] + 1.0, prev[j - 1] + sub))
        prev = cur
    return prev[-1] / max(len(ref), len(hyp))


class PhoneDecoder:
    """One pocketsphinx allphone decoder per process (utterances are decoded one at a time, whole)."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        # dither off: the same audio must give the same phones (determinism); beams wide because an
        # utterance is a few seconds and the decode is ~1 % of real time anyway.
        self._decoder = Decoder(
            allphone=os.path.join(_model_dir(), "en-us-phone.lm.bin"),
            samprate=RATE,
            loglevel="FATAL",
            lw=2.0,
            beam=1e-20,
            pbeam=1e-20,
            dither=False,
        )

    def phones(self, pcm16k: np.ndarray) -> list[str]:
        dec = self._decoder
        # Feature state (cepstral mean and friends) adapts from one utterance to the next, which would make
        # what one caller said depend on what another said before (measured: different phones for the same
        # audio; resetting only the CMN is not enough). A fresh front end per utterance costs nothing.
        dec.reinit_feat()
        dec.start_utt()
        dec.process_raw(pcm16k.astype("<i2").tobytes(), full_utt=True)
        dec.end_utt()
        return [seg.word for seg in dec.seg() if seg.word not in _NON_SPEECH]


DITHER_SIGMA = 8.0  # measured best of 2/4/8/12 on the test phrases in all three wire formats


def dither(pcm16k: np.ndarray) -> np.ndarray:
    """Add a fixed, seeded noise floor (sigma 8 LSB, about -72 dBFS).

    The decoder's features misbehave on exact digital silence (measured: sox-dithered test audio was
    recognised far better than the same audio undithered), and pocketsphinx's own dither draws from a
    generator that runs on across utterances. A fixed seed keeps "same audio, same transcript" and makes
    no utterance depend on an earlier one."""
    if DITHER_SIGMA <= 0 or len(pcm16k) == 0:
        return pcm16k
    noise = np.random.default_rng(12345).normal(0.0, DITHER_SIGMA, len(pcm16k))
    return np.clip(pcm16k.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Recognition:
    transcript: str  # the matched phrase, or "" when rejected
    distance: float  # normalised phone distance of the best phrase (0 = identical)
    phones: tuple[str, ...]  # what the decoder heard
    cpu_ms: float = field(default=0.0, compare=False)  # CPU time the decode took (for the log only)


MIN_UTTERANCE_LIMIT_MS = 10_000
_MAX_MS_PER_PHONE = 150  # slower than any caller speaks (conversational English: 10-15 phones/s)


class PhraseRecognizer:
    """Recognises which of a fixed set of phrases was spoken, or none."""

    def __init__(
        self,
        phrases: list[str],
        decoder: PhoneDecoder,
        reject_above: float = 0.65,
        pronunciations: dict[str, list[str]] | None = None,
    ) -> None:
        """`pronunciations` (phrase -> phones) spares loading the pronouncing dictionary (~48 MB), as
        the recognition workers do: the server looks the phrases up once and passes the phones."""
        self._decoder = decoder
        self.reject_above = reject_above
        said = pronunciations if pronunciations is not None else {p: phones_of(p) for p in phrases}
        self._refs = [(p, said[p]) for p in dict.fromkeys(phrases) if said.get(p)]
        # A hypothesis longer than longest / (1 - reject_above) phones is rejected whatever it says
        # (the distance is normalised by the longer sequence), so a turn longer than that many phones
        # spoken slowly is not decoded at all: decoding costs ~0.07 s of CPU per second of noise, and a
        # two-minute turn of noise would hold a worker for ~9 s.
        longest = max((len(ref) for _p, ref in self._refs), default=0)
        self.max_audio_ms = max(
            MIN_UTTERANCE_LIMIT_MS, math.ceil(longest / (1.0 - min(reject_above, 0.99))) * _MAX_MS_PER_PHONE
        )

    def too_long(self, samples: int, rate: int) -> bool:
        return samples * 1000 > self.max_audio_ms * rate

    def recognise(self, pcm16k: np.ndarray) -> Recognition:
        if self.too_long(len(pcm16k), RATE):
            return Recognition("", 1.0, ())
        heard = self._decoder.phones(dither(pcm16k))
        if not heard or not self._refs:
            return Recognition("", 1.0, tuple(heard))
        # Ties go to the phrase listed first in the profile (stable, so deterministic).
        best_dist, best = min((phone_distance(heard, ref), i) for i, (_p, ref) in enumerate(self._refs))
        phrase = self._refs[best][0]
        return Recognition(phrase if best_dist <= self.reject_above else "", best_dist, tuple(heard))
