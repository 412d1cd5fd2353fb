"""Handoff summaries: extractive from what was said, the live model's JSON answer over it, and the
profile's redaction of every field before it leaves the gateway."""

from __future__ import annotations

from gateway.handoff import summary
from gateway.records.redact import RedactionPolicy, Redactor

TURNS = [
    {"role": "agent", "text": "Thank you for calling Riverside Dental. How can I help you today?"},
    {"role": "caller", "text": "Hi, my name is Ann Lee, I was charged twice on my bill."},
    {"role": "agent", "text": "I am sorry to hear that."},
    {"role": "caller", "text": "Please call me back on 415 555 0199, this is urgent."},
]


def test_extractive_summary_has_the_callers_words_slots_and_urgency():
    s = summary.extractive(TURNS, reason="billing dispute", urgency="normal")
    assert s.source == "extractive"
    assert "charged twice" in s.text and "415 555 0199" in s.text
    assert s.slots.name == "Ann Lee"
    assert s.slots.callback_number == "415 555 0199"
    assert s.reason == "billing dispute" and s.slots.reason == "billing dispute"
    assert s.urgency == "high"  # the caller said "urgent": outranks the tool call's "normal"
    assert s.sentiment in summary.SENTIMENTS


def test_extractive_summary_reads_a_spoken_callback_number():
    s = summary.extractive([{"role": "caller", "text": "call me on five five five zero one nine nine"}],
                           reason="", urgency="low")
    assert s.slots.callback_number == "5550199"
    assert s.urgency == "low"
    assert s.reason.startswith("call me on")  # no reason given: the caller's first words


def test_no_caller_speech_still_gives_a_summary():
    s = summary.extractive([{"role": "agent", "text": "Hello?"}], reason="silent caller", urgency="bogus")
    assert s.text and s.urgency == "normal" and s.slots.callback_number is None


def test_redaction_masks_the_callback_number_in_every_field():
    s = summary.extractive(TURNS, reason="wants a refund to card 4111 1111 1111 1111", urgency="high")
    r = s.redacted(Redactor(RedactionPolicy()))
    dump = repr(r.as_dict())
    assert "555 0199" not in dump and "4111 1111" not in dump
    assert r.slots.callback_number == "[PHONE ***0199]"
    assert "[PHONE ***0199]" in r.text and "[CARD" in r.reason
    assert r.redacted_by == "profile"
    # a 7-digit spoken number is no phone to the detector, but as the callback slot it is masked whole
    short = summary.extractive([{"role": "caller", "text": "my number is 5550199"}], reason="", urgency="")
    masked = short.redacted(Redactor(RedactionPolicy()))
    assert "5550199" not in repr(masked.as_dict())


def test_redaction_off_leaves_text_as_said():
    s = summary.extractive(TURNS, reason="x", urgency="normal")
    assert s.redacted(Redactor(RedactionPolicy(enabled=False))).text == s.text


def test_out_of_band_request_is_text_only_outside_the_conversation():
    e = summary.request("ho_abc")
    assert e["type"] == "response.create"
    r = e["response"]
    assert r["conversation"] == "none" and r["output_modalities"] == ["text"]
    assert r["metadata"] == {"purpose": summary.HANDOFF_PURPOSE, "handoff_id": "ho_abc"}
    assert summary.is_handoff_response({"response": {"metadata": r["metadata"]}}) == "ho_abc"
    assert summary.is_handoff_response({"response": {"metadata": {"purpose": "post_call_summary"}}}) is None


def test_request_validates_against_the_sdks_client_event_model():
    from openai.types.realtime import RealtimeClientEvent
    from pydantic import TypeAdapter

    TypeAdapter(RealtimeClientEvent).validate_python(summary.request("ho_abc"))


def test_model_json_wins_field_by_field_over_the_extractive_summary():
    fallback = summary.extractive(TURNS, reason="billing dispute", urgency="normal")
    s = summary.from_model('Here you go: {"summary": "Ann Lee was double charged and wants a refund.", '
                           '"reason": "double charge", "urgency": "medium", "sentiment": "negative", '
                           '"name": null, "callback_number": null}', fallback)
    assert s.source == "model"
    assert s.text == "Ann Lee was double charged and wants a refund."
    assert s.reason == "double charge"
    assert s.urgency == "high"  # "medium" is no urgency; the extractive "high" stays
    assert s.sentiment == "negative"
    assert s.slots.name == "Ann Lee" and s.slots.callback_number == "415 555 0199"  # filled from fallback


def test_model_plain_text_or_nothing():
    fallback = summary.extractive(TURNS, reason="r", urgency="normal")
    assert summary.from_model("The caller wants a refund.", fallback).text == "The caller wants a refund."
    assert summary.from_model("   ", fallback) == fallback
    assert summary.from_model("{not json", fallback).text == "{not json"
