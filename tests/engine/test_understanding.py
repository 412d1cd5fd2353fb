"""Understanding on text: margins, confirmation, slots, and answers that follow the profile's knowledge and
the session's instructions (no audio: these are the rules, whatever the recogniser heard)."""

from __future__ import annotations

from engine_helpers import _engine_defaults

from gateway.engine.dialogue import DialogueEngine
from gateway.engine.understanding import slots, yes_or_no

TOOLS = {"transfer_call", "end_call", "escalate"}


def front_desk() -> DialogueEngine:
    return DialogueEngine(_engine_defaults().profiles["front-desk"])


def test_cancel_is_never_booking():
    for said in (
        "I want to cancel my appointment",
        "cancel the appointment I booked for tomorrow",
        "I need to book, no, cancel my appointment",
        "please cancel, I can't come to my appointment",
    ):
        plan = front_desk().answer(said, TOOLS)
        assert plan.intent == "cancel_appointment" and plan.kind == "confirm", (said, plan)
        assert plan.reply.startswith("Shall I cancel your appointment")


def test_a_request_is_asked_back_with_what_was_heard_and_done_only_after_yes():
    d = front_desk()
    plan = d.answer("please cancel my appointment on Tuesday", TOOLS)
    assert plan.reply == "Shall I cancel your appointment on Tuesday? Please say yes or no."
    assert d.answer("hmm, let me think", TOOLS).kind == "repeat"  # neither: asked again, nothing done
    done = d.answer("yes please", TOOLS)
    assert done.kind == "act" and done.intent == "cancel_appointment" and "on Tuesday" in done.reply
    d = front_desk()
    d.answer("please cancel my appointment on Tuesday", TOOLS)
    assert d.answer("no, don't", TOOLS).kind == "declined"
    late = d.answer("yes", TOOLS)  # a late yes confirms nothing, and is not taken for a question
    assert late.kind == "fallback" and late.tool is None


def test_booking_asks_for_the_day_then_confirms_it():
    d = front_desk()
    ask = d.answer("I'd like to book an appointment", TOOLS)
    assert ask.kind == "ask" and ask.reply == "Of course. Which day would suit you?"
    confirm = d.answer("next Thursday at half past two in the afternoon", TOOLS)
    assert confirm.reply == (
        "Shall I book you an appointment next Thursday at 2:30 in the afternoon? Please say yes or no."
    )
    assert d.answer("yes", TOOLS).kind == "act"


def test_two_requests_alike_get_a_clarifying_question_not_an_action():
    plan = front_desk().answer("I want to talk to a person about my bill", TOOLS)
    assert plan.kind == "clarify" and plan.tool is None
    assert "talk to billing" in plan.reply and "talk to a person" in plan.reply


def test_a_manager_or_a_person_gets_a_transfer_offer():
    for said in ("can I talk to your manager", "I want a real person", "get me a human"):
        d = front_desk()
        plan = d.answer(said, TOOLS)
        assert plan.kind == "confirm" and plan.tool is None and "colleague" in plan.reply
        assert d.answer("yes", TOOLS).tool.name == "escalate"


def test_changing_the_hours_in_the_instructions_changes_the_answer():
    d = front_desk()
    assert "Monday to Friday" in d.answer("what are your opening hours", TOOLS).reply
    other = "You are the front desk of Hilltop Dental.\nOpening hours: Tuesday to Saturday, nine to five.\n"
    d = front_desk()
    plan = d.answer("what are your opening hours", TOOLS, instructions=other)
    assert plan.reply == "Our opening hours are Tuesday to Saturday, nine to five."


def test_holiday_hours_are_not_the_weekday_hours():
    plan = front_desk().answer("are you open on christmas eve", TOOLS)
    assert "public holidays" in plan.reply and "Monday to Friday" not in plan.reply


def test_an_unanswerable_question_gets_an_honest_answer_and_an_offer():
    d = front_desk()
    plan = d.answer("do you sell electric toothbrushes", TOOLS)
    assert plan.kind == "out_of_scope" and plan.tool is None
    assert plan.reply.startswith("I am sorry, I do not have that information.")
    done = d.answer("yes", TOOLS)
    assert done.tool.name == "transfer_call" and done.tool.arguments == {"target": "reception"}


def test_yes_and_no():
    assert yes_or_no("Yes, please.") is True
    assert yes_or_no("Yeah, go ahead") is True
    assert yes_or_no("No, thank you.") is False
    assert yes_or_no("don't do that") is False
    assert yes_or_no("yes, no, wait") is None
    assert yes_or_no("what?") is None


def test_slots_from_the_callers_words():
    s = slots("Can I come in next Monday at 10 am? My name is Maria Lopez.")
    assert (s.date, s.time, s.name) == ("next Monday", "at 10 in the morning", "Maria Lopez")
    assert slots("on the 5th of March at 3:30").date == "on the fifth of March"
    assert slots("on the 5th of March at 3:30").time == "at 3:30"
    assert slots("tomorrow afternoon").when == " tomorrow in the afternoon"
    assert slots("I have two kids and one is twelve").numbers == [2, 1, 12]
