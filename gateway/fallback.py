"""Fallback prompts, synthesised once at start-up so a model outage never needs the model to speak.

espeak-ng (Debian package, offline) renders each profile's `fallback.prompt`; it is converted once to
8 and 16 kHz L16. If espeak-ng is missing, a short 425 Hz tone pattern (the ITU "please wait" family)
is used so the caller still hears something, and a warning is logged.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess

import numpy as np
import soundfile

from gateway.audio.resample import float_to_pcm16
from gateway.log import fields
from gateway.profiles import ProfileSet

log = logging.getLogger("gateway.fallback")


def synthesize(text: str, rate: int, voice: str = "en-us") -> np.ndarray:
    """Text -> int16 mono at `rate` with the espeak-ng CLI (raises if it is not installed)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng not installed")
    cmd = [exe, "-v", voice, "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True, timeout=30).stdout
    data, src_rate = soundfile.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    return float_to_pcm16(data.mean(axis=1), src_rate, rate)


def _tone(rate: int) -> np.ndarray:
    t = np.arange(int(rate * 0.4)) / rate
    beep = 0.3 * np.sin(2 * np.pi * 425 * t)
    gap = np.zeros(int(rate * 0.2))
    return float_to_pcm16(np.concatenate([beep, gap, beep]), rate, rate)


class FallbackPrompts:
    def __init__(self, profiles: ProfileSet, voice: str = "en-us") -> None:
        self._audio: dict[tuple[str, int], bytes] = {}
        for name, profile in profiles.profiles.items():
            for rate in (8000, 16000):
                try:
                    pcm = synthesize(profile.fallback.prompt, rate, voice)
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    log.warning("fallback prompt not synthesised, using a tone",
                                extra=fields(profile=name, error=str(exc)))
                    pcm = _tone(rate)
                self._audio[(name, rate)] = pcm.astype("<i2").tobytes()

    def __call__(self, profile: str, rate: int) -> bytes:
        return self._audio.get((profile, rate)) or _tone(rate).astype("<i2").tobytes()
