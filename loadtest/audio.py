"""Speech audio for load tests: spoken with espeak-ng, converted with sox.

SIPp 3.6.1's rtp_stream sends the file's bytes as they are (no WAV parsing), so the caller needs
headerless 8 kHz mu-law.  The gateway client wants 16-bit PCM WAV at the call's rate.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# A question the shipped front-desk profile answers, so a media load against the embedded engine
# exercises recognition and a real reply, not only the "did not catch that" fallback.
DEFAULT_QUESTION = "What are your opening hours?"


class AudioToolMissing(RuntimeError):
    """espeak-ng or sox is not installed (Debian: apt-get install espeak-ng sox)."""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AudioToolMissing(f"{tool} not found on PATH; install it (apt-get install -y {tool})")
    return path


def speak_wav(text: str, out: Path, *, rate: int = 8000) -> Path:
    """Speak `text` into a mono 16-bit WAV at `rate` Hz."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".espeak.wav")
    subprocess.run([_need("espeak-ng"), "-w", str(raw), text], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(
            [_need("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer",
             str(out)],
            check=True, capture_output=True, timeout=60,
        )
    finally:
        raw.unlink(missing_ok=True)
    return out


def speak_ulaw(text: str, out: Path) -> Path:
    """Speak `text` into headerless 8 kHz mu-law, the format rtp_stream payload 0 expects."""
    out = Path(out)
    wav = speak_wav(text, out.with_suffix(".8k.wav"), rate=8000)
    try:
        subprocess.run([_need("sox"), str(wav), "-t", "ul", "-r", "8000", "-c", "1", str(out)],
                       check=True, capture_output=True, timeout=60)
    finally:
        wav.unlink(missing_ok=True)
    return out
