"""Same audio in, same events out: over the SDK, and in the sans-I/O core on an injected clock (where
even a barge-in lands at the same audio byte every time)."""

from __future__ import annotations

import base64
import json

from engine_helpers import Conversation, _engine_defaults, front_desk_update, start_engine

from gateway.engine.session import RealtimeSession

TURNS = ["what are your opening hours", "transfer me to billing", "goodbye"]


async def run_call(url: str, say) -> list[dict]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="x", websocket_base_url=url, max_retries=0)
    conn = await client.realtime.connect(model="gpt-realtime", extra_query={"profile": "front-desk"}).enter()
    conv = Conversation(conn)
    try:
        await conv.send(front_desk_update())
        await conv.send({"type": "response.create", "response": {"instructions": 'Say exactly: "Welcome."'}})
        await conv.expect("response.done")
        for text in TURNS:
            await conv.append(say(text))
            await conv.expect("response.done")
        return list(conv.events)
    finally:
        await conv.close()
        await conn.close()


async def test_same_call_twice_gives_identical_events(say):
    runner, port, _ = await start_engine(pace=0)
    try:
        url = f"ws://127.0.0.1:{port}/v1"
        first = await run_call(url, say)
        second = await run_call(url, say)
    finally:
        await runner.cleanup()
    assert len(first) > 50
    assert json.dumps(first) == json.dumps(second)  # ids, transcripts and every audio byte


def drive(say, barge_at_s: float) -> list[dict]:
    """The core alone: caller audio in 20 ms frames on a synthetic clock, polling every 20 ms."""
    engine = _engine_defaults()
    session = RealtimeSession(engine.profiles["front-desk"], engine.engines, pace=1.0, lead_ms=0)
    events = session.open(0.0)
    events += session.receive(json.dumps(front_desk_update()), 0.0)
    audio = say("what are your opening hours") + b"\xff" * 8 * int(barge_at_s * 1000) + say("goodbye")
    now = 0.0
    for i in range(0, len(audio), 160):
        frame = base64.b64encode(audio[i : i + 160]).decode()
        events += session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": frame}), now)
        events += session.poll(now)
        now += 0.02
    for _ in range(500):  # let the last reply play out on the synthetic clock
        events += session.poll(now)
        now += 0.02
    return events


HOURS = "Our opening hours are Monday to Friday, eight in the morning to six in the evening."


def test_core_on_injected_clock_is_deterministic_including_barge_in(say):
    a = drive(say, barge_at_s=1.5)
    b = drive(say, barge_at_s=1.5)
    assert json.dumps(a) == json.dumps(b)
    done = [e["response"] for e in a if e["type"] == "response.done"]
    # The hours answer is interrupted 1.5 s (plus the VAD onset) into its audio, then goodbye is handled.
    assert done[0]["status"] == "cancelled" and done[0]["status_details"]["reason"] == "turn_detected"
    heard = done[0]["output"][0]["content"][0]["transcript"]
    assert heard and HOURS.startswith(heard) and heard != HOURS
    # Goodbye ends a call, so it is asked back first: a question, no tool yet.
    assert done[1]["status"] == "completed" and [o["type"] for o in done[1]["output"]] == ["message"]
    asked = done[1]["output"][0]["content"][0]["transcript"]
    assert asked == "Shall I end the call now? Please say yes or no."
    # A later barge-in lets more of the answer out before the cut.
    c = drive(say, barge_at_s=2.5)
    sent = [
        sum(
            len(base64.b64decode(e["delta"]))
            for e in ev
            if e["type"] == "response.output_audio.delta" and e["response_id"] == "resp_00001"
        )
        for ev in (a, c)
    ]
    assert sent[0] < sent[1]


def drive_deferred(say, barge_at_s: float) -> list[dict]:
    """`drive`, with recognition handed out as jobs and their results fed back (as the server does)."""
    engine = _engine_defaults()
    session = RealtimeSession(
        engine.profiles["front-desk"], engine.engines, pace=1.0, lead_ms=0, recognise_inline=False
    )
    events = session.open(0.0)
    events += session.receive(json.dumps(front_desk_update()), 0.0)
    audio = say("what are your opening hours") + b"\xff" * 8 * int(barge_at_s * 1000) + say("goodbye")
    now, jobs = 0.0, 0
    # Whole seconds per append: a turn's end falls mid-message, so the audio after it must wait.
    for i in range(0, len(audio), 8000):
        frame = base64.b64encode(audio[i : i + 8000]).decode()
        events += session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": frame}), now)
        while session.waiting is not None:
            job = session.waiting
            jobs += 1
            events += session.recognised(engine.engines.recognise(job.profile, job.pcm, job.rate), now)
        events += session.poll(now)
        now += 1.0
    for _ in range(30):
        events += session.poll(now)
        now += 1.0
    assert jobs == 2
    return events


def test_deferred_recognition_gives_the_same_events_as_inline(say):
    engine = _engine_defaults()
    session = RealtimeSession(engine.profiles["front-desk"], engine.engines, pace=1.0, lead_ms=0)
    inline = session.open(0.0) + session.receive(json.dumps(front_desk_update()), 0.0)
    audio = say("what are your opening hours") + b"\xff" * 8 * 2500 + say("goodbye")
    now = 0.0
    for i in range(0, len(audio), 8000):
        frame = base64.b64encode(audio[i : i + 8000]).decode()
        inline += session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": frame}), now)
        inline += session.poll(now)
        now += 1.0
    for _ in range(30):
        inline += session.poll(now)
        now += 1.0
    deferred = drive_deferred(say, barge_at_s=2.5)
    assert json.dumps(deferred) == json.dumps(inline)
    transcripts = [e["transcript"] for e in deferred if e["type"].endswith("transcription.completed")]
    assert len(transcripts) == 2
    assert "opening hour" in transcripts[0].lower() and "bye" in transcripts[1].lower()
