"""Greetings for answering-machine detection: espeak-ng speech (8 kHz PCMU, as on the wire), silence and
a voicemail beep."""

from __future__ import annotations

from functools import cache

import numpy as np
from harness.rtp import speech_pcmu, ulaw_encode

HUMAN_HELLO = "Hello?"
MACHINE_GREETING = ("Hi, you have reached the voicemail of Jordan Smith. I can not take your call right now. "
                    "Please leave your name and number after the tone.")


@cache
def spoken(text: str) -> bytes:
    return speech_pcmu(text)


def silence(seconds: float) -> bytes:
    return b"\xff" * int(8000 * seconds)


def beep(seconds: float = 0.5, freq: float = 1000.0, amplitude: int = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000.0
    return ulaw_encode((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def human() -> bytes:
    return silence(0.4) + spoken(HUMAN_HELLO) + silence(3.0)


def machine() -> bytes:
    return silence(0.4) + spoken(MACHINE_GREETING) + silence(0.3) + beep() + silence(2.0)
