"""The engine's parts on their own: VAD positions, the dialogue rules, the transcriber on open speech,
and the synthesiser's word timing."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import _engine_defaults

from gateway.engine import audio
from gateway.engine.dialogue import DialogueEngine, say_exactly
from gateway.engine.vad import TurnDetector


def frames(pcm: np.ndarray):
    for i in range(0, len(pcm) - 159, 160):
        yield pcm[i : i + 160]


def test_vad_reports_start_and_stop_on_the_audio_clock(say):
    pcm = audio.decode("audio/pcmu", say("what are your opening hours", lead_ms=1000, tail_ms=1000))
    vad = TurnDetector(threshold=0.5, silence_duration_ms=500)
    events = [ev for f in frames(pcm) if (ev := vad.frame(f)) is not None]
    assert [e.kind for e in events] == ["start", "stop"]
    speech_ms = len(pcm) // 8 - 2000  # the espeak clip, which itself ends in ~300 ms of silence
    assert 980 <= events[0].ms <= 1100  # speech begins 1 s in
    assert 1000 + speech_ms + 100 <= events[1].ms <= 1000 + speech_ms + 500  # end + silence_duration


def test_vad_ignores_low_level_hiss():
    rng = np.random.default_rng(7)
    hiss = rng.normal(0, 30, 8000 * 3).astype(np.int16)  # about -60 dBFS
    vad = TurnDetector(threshold=0.5)
    assert all(vad.frame(f) is None for f in frames(hiss))


@pytest.mark.parametrize("silence_ms", [300, 800])
def test_vad_silence_duration_is_honoured(say, silence_ms):
    pcm = audio.decode("audio/pcmu", say("goodbye", lead_ms=500, tail_ms=1500))
    vad = TurnDetector(silence_duration_ms=silence_ms)
    events = [ev for f in frames(pcm) if (ev := vad.frame(f)) is not None]
    stop = events[-1]
    assert stop.kind == "stop"
    vad2 = TurnDetector(silence_duration_ms=silence_ms + 200)
    events2 = [ev for f in frames(pcm) if (ev := vad2.frame(f)) is not None]
    assert events2[-1].ms - stop.ms == 200


def test_dialogue_rules_from_the_profile():
    engine = DialogueEngine(_engine_defaults().profiles["front-desk"])
    all_tools = {"transfer_call", "end_call", "escalate"}
    plan = engine.answer("Transfer me to billing, please", all_tools)
    assert plan.tool is None and plan.reply == "Shall I transfer you to billing? Please say yes or no."
    plan = engine.answer("Yes, please.", all_tools)
    assert plan.tool.name == "transfer_call" and plan.tool.arguments == {"target": "billing"}
    assert plan.reply is None
    engine = DialogueEngine(_engine_defaults().profiles["front-desk"])
    plan = engine.answer("transfer me to billing", {"end_call"})
    assert plan.tool is None and plan.reply  # not offered: spoken, never called
    assert engine.answer("yes", {"end_call"}).tool is None
    engine.answer("goodbye", all_tools)
    plan = engine.answer("yes", all_tools)
    assert plan.reply == "Thank you for calling Riverside Dental. Goodbye!" and plan.tool.name == "end_call"
    assert engine.after_tool("transfer_billing", '{"ok": true}').reply == "Transferring you to billing now."
    failed = engine.after_tool("transfer_billing", '{"ok": false, "error": "busy"}')
    assert failed.reply == "Sorry, that did not work: busy."
    assert engine.after_tool("goodbye", '{"ok": true}').reply is None


def test_nothing_heard_gets_the_fallback_and_a_stray_question_no_made_up_answer():
    engine = DialogueEngine(_engine_defaults().profiles["front-desk"])
    tools = {"transfer_call", "end_call", "escalate"}
    assert engine.answer("", tools).reply.startswith("Sorry, I did not catch that")
    plan = engine.answer("purple elephants dancing", tools)
    assert plan.tool is None and plan.reply.startswith("I am sorry, I do not have that information.")
    assert engine.answer("no", tools).tool is None
    # Without a transfer tool there is nothing to offer: the honest answer alone.
    plan = DialogueEngine(_engine_defaults().profiles["front-desk"]).answer("do you sell pizza", {"end_call"})
    assert plan.tool is None and "Shall I" not in plan.reply


def test_say_exactly_is_verbatim():
    assert (
        say_exactly('Say exactly: "Thank you for calling. How can I help?"')
        == "Thank you for calling. How can I help?"
    )
    assert say_exactly("Greet the caller") is None


def test_transcriber_writes_down_open_speech_it_never_saw(say):
    engines = _engine_defaults().engines
    pcm = audio.decode("audio/pcmu", say("is there parking near your office"))
    heard = engines.recognise("front-desk", pcm, 8000)
    assert {"parking", "office"} <= set(heard.transcript.lower().replace("?", "").split())
    assert 0 < heard.confidence <= 1
    silence = np.zeros(8000, np.int16)
    assert engines.recognise("front-desk", silence, 8000).transcript == ""


def test_synthesiser_word_timing_cuts_the_transcript():
    synth = _engine_defaults().engines.synth
    text = "We are open Monday to Friday."
    speech = synth.synthesize(text)
    assert speech.rate == 22050 and len(speech.pcm) > speech.rate
    assert speech.text_until(text, 0) == ""
    assert speech.text_until(text, len(speech.pcm)) == text
    half = speech.text_until(text, len(speech.pcm) // 2)
    assert text.startswith(half) and 0 < len(half) < len(text)


def test_recognition_does_not_depend_on_what_was_heard_before(say):
    engines = _engine_defaults().engines
    pcm = audio.decode("audio/pcmu", say("do you take my insurance"))
    before = engines.recognise("front-desk", pcm, 8000)
    noise = np.random.default_rng(0).normal(0, 8000, 16000).astype(np.int16)
    for _ in range(2):
        engines.recognise("front-desk", noise, 16000)
    after = engines.recognise("front-desk", pcm, 8000)
    assert after == before and "insurance" in after.transcript.lower()
