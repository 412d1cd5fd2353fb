"""Offline speech synthesis: libespeak-ng in-process through ctypes.

Measured on a 2-core x86-64 machine: 2-7 ms per sentence (real-time factor ~0.001), ~38 MB resident,
nothing downloaded.
The Debian `libespeak-ng1` package provides the library and its voice data. libespeak-ng keeps global
state, so one `EspeakSynth` serves the whole process and renders one text at a time under a lock (the
engine synthesises on the event loop thread, and on its bulk-message thread when a large client
message starts a response).

libespeak-ng is not a pure function: its noise/flutter generators keep running across utterances, so the
same sentence comes out slightly different each time (measured: "Welcome." 11 848 vs 12 706 samples).
There is no public reset (Terminate + Initialize deadlocks in synchronous mode), so the synthesiser
keeps a cache keyed by (text, rate): every text sounds the same for the life of the process, and the
engine pre-fills it with every profile phrase in profile order at start-up, which makes those identical
across processes too. Texts not in a profile (`Say exactly: ...`) are identical from their second use on.

Word events give the audio offset of every word, which the session uses to keep the spoken transcript
in step with the audio it has sent (so a truncate after barge-in cuts the transcript at the same word).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_DEFAULT_WPM = 175


class _Event(ctypes.Structure):
    # espeak_EVENT from speak_lib.h (x86-64 and aarch64 layouts agree: 40 bytes).
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class TTSUnavailable(RuntimeError):
    """libespeak-ng is missing or refused to initialise."""


@dataclass(frozen=True)
class Speech:
    """One synthesized utterance at `rate` Hz, with where each word starts (sample index, char span)."""

    pcm: np.ndarray
    rate: int
    words: tuple[tuple[int, int, int], ...]  # (start sample, char start, char end) per word

    def text_until(self, text: str, sample: int) -> str:
        """The part of `text` whose words started before `sample` (the transcript heard so far)."""
        end = 0
        for start, _c0, c1 in self.words:
            if start < sample:
                end = max(end, c1)
        if sample >= len(self.pcm):
            return text
        return text[:end].rstrip()


class EspeakSynth:
    def __init__(self, voice: str = "en-us", library: str | None = None) -> None:
        path = library or ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as exc:
            raise TTSUnavailable(f"cannot load {path}: {exc} (apt-get install libespeak-ng1)") from exc
        self.rate = int(self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, None, 0))
        if self.rate <= 0:
            raise TTSUnavailable("espeak_Initialize failed (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._callback = _Callback(self._on_audio)  # keep a reference: C holds only the pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise TTSUnavailable(f"espeak-ng has no voice {voice!r}")
        self._wpm = _DEFAULT_WPM
        self._cache: OrderedDict[tuple[str, int], Speech] = OrderedDict()
        self.cache_size = 256
        self._lock = threading.Lock()

    def _on_audio(self, wav, numsamples, events) -> int:  # noqa: ANN001 - ctypes callback signature
        if numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD and ev.length > 0:
                self._events.append((ev.sample, ev.text_position - 1, ev.text_position - 1 + ev.length))
            i += 1
        return 0

    def synthesize(self, text: str, speed: float = 1.0) -> Speech:
        with self._lock:
            return self._synthesize(text, speed)

    def _synthesize(self, text: str, speed: float) -> Speech:
        wpm = max(80, min(450, round(_DEFAULT_WPM * speed)))
        key = (text, wpm)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        speech = self._render(text, wpm)
        self._cache[key] = speech
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return speech

    def _render(self, text: str, wpm: int) -> Speech:
        if wpm != self._wpm:
            self._lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
            self._wpm = wpm
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        # espeak reports text positions in characters; pass the byte length as the buffer size.
        self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Speech(pcm=pcm.astype(np.int16), rate=self.rate, words=tuple(self._events))
