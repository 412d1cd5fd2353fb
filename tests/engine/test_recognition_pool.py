"""The recognition queue: shortest audio first, failures cost one turn, and an over-long turn is cut to
its first 15 s before it is transcribed."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from engine_helpers import _engine_defaults

from gateway.engine.asr import Recognition
from gateway.engine.recognition import RecognitionJob, RecognitionPool


async def test_a_short_turn_is_decoded_before_longer_ones_queued_earlier():
    started: list[int] = []
    gate = threading.Event()

    def decode(job: RecognitionJob) -> Recognition:
        started.append(job.audio_ms)
        gate.wait(10)  # the first job holds the only worker until every job is queued
        return Recognition(f"{job.audio_ms} ms")

    pool = RecognitionPool(workers=0, local=decode)
    try:
        jobs = [RecognitionJob("p", np.zeros(8 * ms, np.int16), 8000) for ms in (500, 9000, 6000, 1200)]
        tasks = []
        for job in jobs:
            tasks.append(asyncio.create_task(pool.recognise(job)))
            await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        pool.close()
    assert [r.transcript for r in results] == ["500 ms", "9000 ms", "6000 ms", "1200 ms"]
    assert started == [500, 1200, 6000, 9000]  # the first ran at once; the rest shortest first


async def test_a_failing_decode_costs_that_turn_only():
    calls = 0

    def decode(job: RecognitionJob) -> Recognition:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("decoder broke")
        return Recognition("goodbye", 0.9)

    pool = RecognitionPool(workers=0, local=decode)
    try:
        job = RecognitionJob("p", np.zeros(8000, np.int16), 8000)
        assert await pool.recognise(job) is None
        assert (await pool.recognise(job)).transcript == "goodbye"
    finally:
        pool.close()


def test_a_two_minute_turn_is_cut_to_its_first_15_seconds(say):
    from gateway.engine import audio

    engines = _engine_defaults().engines
    speech = audio.decode("audio/pcmu", say("goodbye"))
    noise = np.random.default_rng(5).integers(-8, 8, 8000 * 120, np.int16)  # quiet line noise
    long_turn = np.concatenate([speech, noise])
    result = engines.recognise("front-desk", long_turn, 8000)
    assert result is not None and "bye" in result.transcript.lower()
    assert result.cpu_ms < 20_000  # not two minutes of decoding


def test_a_pause_makes_the_turns_recognition_audio_ready_before_the_silence_window_ends(say):
    """The session hands out the audio to recognise when the caller has paused 200 ms: exactly the
    samples the turn is recognised on when the 500 ms silence window closes, so recognition can start
    300 ms earlier and its result is the turn's (same audio, same transcript)."""
    import base64
    import json

    from engine_helpers import front_desk_update

    from gateway.engine.session import RealtimeSession

    engine = _engine_defaults()
    session = RealtimeSession(engine.profiles["front-desk"], engine.engines, recognise_inline=False)
    session.open(0.0)
    session.receive(json.dumps(front_desk_update()), 0.0)
    audio = say("do you see children")
    early, stopped_at, early_at = None, None, None
    for i in range(0, len(audio), 160):  # 20 ms appends, as the gateway sends
        msg = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio[i : i + 160]).decode()}
        events = session.receive(json.dumps(msg), i / 8000)
        if session.speculative is not None and early is None:
            early, session.speculative, early_at = session.speculative, None, i / 8000
        if any(e["type"] == "input_audio_buffer.speech_stopped" for e in events):
            stopped_at = i / 8000
            break
    assert early is not None and stopped_at is not None
    assert stopped_at - early_at == pytest.approx(0.3, abs=0.021)
    waiting = session.waiting
    assert waiting is not None and np.array_equal(waiting.pcm, early.pcm)
