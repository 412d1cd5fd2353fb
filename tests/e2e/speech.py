"""Caller phrases, synthesised once per test session (espeak-ng -> 8 kHz PCMU)."""

from __future__ import annotations

from functools import cache

from harness.rtp import speech_pcmu


@cache
def phrase(text: str) -> bytes:
    return speech_pcmu(text)


OPENING_HOURS = "What are your opening hours?"
BILLING = "Transfer me to billing please."
HUMAN = "I want to talk to a human."
GOODBYE = "Thank you, goodbye."
YES = "Yes, please."  # the answer to the embedded engine's "Shall I ...?" before an action
