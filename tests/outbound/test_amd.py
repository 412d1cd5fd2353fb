"""Answering-machine detection on espeak-ng greetings: "Hello?" is a human, a long greeting is a machine,
and the beep is found (and its end, the cue for a message) even inside speech."""

from __future__ import annotations

import shutil

import pytest
from amd_audio import MACHINE_GREETING, beep, human, machine, silence, spoken

from gateway.audio import g711
from gateway.outbound.amd import AmdConfig, AmdDetector

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")),
                                reason="espeak-ng and sox are installed by `make test`")


def run(pcmu: bytes, cfg: AmdConfig | None = None, chunk: int = 160) -> AmdDetector:
    d = AmdDetector(8000, cfg or AmdConfig())
    pcm = g711.ulaw_to_pcm16(pcmu)
    for i in range(0, len(pcm), chunk * 2):
        d.feed_pcm16(pcm[i:i + chunk * 2])
    return d


def test_hello_is_a_human():
    d = run(human())
    assert d.verdict is not None and d.verdict.kind == "human" and d.verdict.reason == "short_greeting"
    assert d.verdict.at_ms < 2500  # decided soon after "Hello?" and a pause
    assert d.beep_start_ms is None


def test_a_long_greeting_is_a_machine_and_its_beep_is_found():
    d = run(machine())
    assert d.verdict is not None and d.verdict.kind == "machine" and d.verdict.reason == "long_greeting"
    assert 1500 < d.verdict.at_ms < 2500  # 0.4 s silence + the greeting limit
    assert d.beep_start_ms is not None and d.beep_end_ms is not None
    expected_start = int((0.4 + len(spoken(MACHINE_GREETING)) / 8000 + 0.3) * 1000)
    assert abs(d.beep_start_ms - expected_start) <= 60
    assert abs((d.beep_end_ms - d.beep_start_ms) - 500) <= 60


def test_a_beep_alone_is_a_machine():
    d = run(silence(0.5) + beep(0.4, 1400) + silence(1))
    assert d.verdict is not None and d.verdict.kind == "machine" and d.verdict.reason == "beep"


def test_a_threshold_from_the_profile_changes_the_verdict():
    # A leisurely human greeting ("Hello, this is Sam speaking") passes with a generous limit.
    greeting = silence(0.3) + spoken("Hello, this is Sam speaking.") + silence(2)
    assert run(greeting, AmdConfig(greeting_max_ms=1000)).verdict.kind == "machine"
    assert run(greeting, AmdConfig(greeting_max_ms=4000)).verdict.kind == "human"


def test_nobody_speaking_is_greeted_as_a_human():
    d = run(silence(5))
    assert d.verdict is not None and d.verdict.kind == "human" and d.verdict.reason == "silence"


def test_speech_is_not_mistaken_for_a_beep():
    d = run(spoken("Hello? Hello? Who is this? I can hear you, can you hear me?") + silence(1),
            AmdConfig(greeting_max_ms=10000))
    assert d.beep_start_ms is None


@pytest.mark.parametrize("chunk", [80, 160, 333, 4000])
def test_any_chunking_gives_the_same_verdict(chunk):
    ref = run(machine())
    d = run(machine(), chunk=chunk)
    assert d.verdict == ref.verdict and d.beep_start_ms == ref.beep_start_ms
