"""The post-call record's figures, usage from `response.done`, and caller keys."""

from __future__ import annotations

from openai.types.realtime import ResponseDoneEvent

from gateway.records.analysis import analyse, sign
from gateway.records.api import _csv_cell
from gateway.records.recorder import normalise_caller
from gateway.records.redact import Redactor


def _turn(role: str, text: str, latency: float | None = None) -> dict:
    return {"role": role, "text": text, "latency_ms": latency, "item_id": "", "barged_in": False}


def test_reply_latency_percentiles_intent_slots_and_escalation():
    turns = [_turn("agent", "Hello.")]
    for i, lat in enumerate([300.0, 500.0, 400.0, 900.0, 600.0]):
        turns += [
            _turn("caller", "This is urgent, my name is Tom Baker, I want a quote" if i == 0 else "ok"),
            _turn("agent", "Sure.", lat),
        ]
    events = [{"kind": "tool", "data": {"name": "escalate", "ok": True}}]
    a = analyse(
        turns,
        events,
        outcome="escalated",
        duration_s=42.0,
        stats={"barge_ins": 2},
        usage={},
        redactor=Redactor(),
    )
    assert a["reply_latency_ms"] == {"p50": 500.0, "p95": 840.0, "n": 5}
    assert a["first_reply_latency_ms"] == 300.0
    assert a["intent"] == "sales" and a["slots"]["name"] == "Tom Baker" and a["slots"]["urgency"] == "high"
    assert (
        a["escalation"] is True
        and a["barge_ins"] == 2
        and a["tool_calls"] == [{"name": "escalate", "ok": True}]
    )


def test_a_call_without_caller_speech_has_an_honest_record():
    a = analyse(
        [_turn("agent", "Hello.")],
        [],
        outcome="caller_hangup",
        duration_s=3.0,
        stats={},
        usage={},
        redactor=Redactor(),
    )
    assert a["intent"] == "none" and a["summary"] == "No caller speech. Outcome: caller_hangup."
    assert a["reply_latency_ms"]["p50"] is None


def test_usage_tokens_are_summed_from_the_ga_response_done_shape():
    from gateway.records.recorder import CallRecorder

    done = {
        "type": "response.done",
        "event_id": "e1",
        "response": {
            "id": "r1",
            "object": "realtime.response",
            "status": "completed",
            "output": [],
            "usage": {
                "total_tokens": 120,
                "input_tokens": 80,
                "output_tokens": 40,
                "input_token_details": {"text_tokens": 30, "audio_tokens": 50, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 10, "audio_tokens": 30},
            },
        },
    }
    ResponseDoneEvent.model_validate(done)  # the shape the SDK parses

    class _R:  # only usage_from is exercised; it reads nothing else
        usage: dict = {}

    rec = _R()
    rec.usage = {}
    CallRecorder.usage_from(rec, done["response"])  # type: ignore[arg-type]
    CallRecorder.usage_from(rec, done["response"])  # type: ignore[arg-type]
    assert rec.usage == {
        "input_tokens": 160,
        "output_tokens": 80,
        "total_tokens": 240,
        "input_audio_tokens": 100,
        "input_text_tokens": 60,
        "input_cached_tokens": 0,
        "output_audio_tokens": 60,
        "output_text_tokens": 20,
    }


def test_caller_ids_are_normalised_before_keying():
    assert normalise_caller("sip:+1 (415) 555-0111@carrier.example;user=phone") == "+14155550111"
    assert normalise_caller("14155550111") == "+14155550111"
    assert normalise_caller("CH0123456789abcdef") == "CH0123456789abcdef"  # a conversation id as it is


def test_webhook_signature_is_hmac_sha256_over_timestamp_and_body():
    # Known answer, computed once with: openssl dgst -sha256 -hmac k <<< '1.{}' (without the newline)
    assert sign(b"k", "1", b"{}") == "v1=3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158"


def test_csv_export_quotes_cells_a_spreadsheet_would_run():
    assert _csv_cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert _csv_cell("-3.5") == "-3.5" and _csv_cell(None) == "" and _csv_cell("plain") == "plain"


def test_caller_name_line_is_what_the_engine_reads() -> None:
    """The memory block names the caller on a line of its own; the engine's parser accepts that line and
    nothing that is not a plain name."""
    from gateway.engine.dialogue import caller_name, greet_by_name
    from gateway.records.memory import memory_instructions
    from gateway.records.policy import MemoryPolicy

    mem = {"calls": 2, "summary": "Caller (other): \"hi\". (name: Ann Lee)\nCaller (sales): \"hello\". "
           "(name: Maria Lopez)", "turns": []}
    block = memory_instructions(mem, MemoryPolicy(mode="on"))
    assert "\nCaller name: Maria Lopez" in block
    assert caller_name("Be brief." + block) == "Maria Lopez"
    assert greet_by_name("Thank you for calling.", "Maria Lopez") == "Hello Maria. Thank you for calling."
    nameless = memory_instructions({"calls": 1, "summary": "No caller speech."}, MemoryPolicy())
    assert caller_name(nameless) is None
    for bad in ("Caller name: <speak>x</speak>", "Caller name: 555 0100", "Caller name: A B C D E F"):
        assert caller_name(bad) is None
