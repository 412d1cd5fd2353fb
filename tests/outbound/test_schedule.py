"""Business hours, holidays and the on-call ladder's configuration in a profile."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gateway.outbound.ladder import announcement
from gateway.outbound.schedule import OnCall, Schedule

WEEK = {d: "08:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}


def test_business_hours_follow_the_profiles_zone_weekdays_and_holidays():
    s = Schedule(timezone="Europe/London", hours=WEEK, holidays=["2026-12-25"])
    assert s.open_at(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))  # Monday 09:00 GMT
    assert not s.open_at(datetime(2026, 12, 7, 18, 0, tzinfo=UTC))  # closing time
    assert not s.open_at(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))  # Sunday
    assert not s.open_at(datetime(2026, 12, 25, 12, 0, tzinfo=UTC))  # a holiday on a Friday
    # Summer time: 07:30 UTC is 08:30 BST, open; in winter it is 07:30 GMT, closed.
    assert s.open_at(datetime(2026, 7, 6, 7, 30, tzinfo=UTC))
    assert not s.open_at(datetime(2026, 1, 5, 7, 30, tzinfo=UTC))
    assert not Schedule().open_at(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))  # no hours: always after hours


@pytest.mark.parametrize("bad", [{"timezone": "Nowhere/City"}, {"hours": {"mon": "9-5"}},
                                 {"hours": {"funday": "08:00-09:00"}}, {"holidays": ["25/12/2026"]}])
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ValidationError):
        Schedule(**bad)


def test_on_call_people_are_dialled_as_digits_and_bounded():
    ladder = OnCall(people=[{"name": "Dana", "number": "+44 7700 900-001"},
                            {"name": "Lee", "number": 4477009}])
    assert [p.number for p in ladder.people] == ["+447700900001", "4477009"]
    with pytest.raises(ValidationError):
        OnCall(people=[])
    with pytest.raises(ValidationError):
        OnCall(people=[{"name": f"p{i}", "number": "+1555000"} for i in range(9)])
    with pytest.raises(ValidationError):
        OnCall(people=[{"name": "x", "number": "sip:evil@host"}])


def test_the_announcement_reads_the_callback_digit_by_digit_and_has_no_quotes():
    text = announcement('He said "flood" in room 2', "+1 (555) 0123")
    assert '"' not in text and "flood" in text
    assert "1 5 5 5 0 1 2 3" in text and text.endswith("Press 1 to acknowledge.")


def test_the_announcement_of_a_long_conversation_is_the_callers_words_and_fits_one_originate_variable():
    """A summary in transcript form (the escalate tool's: the last turns, the agent's confirmation
    question among them) used to overflow the 256-character originate variable, and the leg was refused."""
    from gateway.outbound.originate import MAX_VAR_CHARS, encode_vars

    summary = " / ".join(["agent: Thank you for calling Riverside Dental. How can I help you today?",
                          "caller: The pipe under the sink burst and water is everywhere.",
                          "agent: Would you like me to put you through to a colleague? Please say yes or no.",
                          "caller: Yes, please."])
    text = announcement(summary, "15550001111")
    assert "pipe under the sink burst" in text and "Would you like" not in text
    assert len(text) <= MAX_VAR_CHARS and encode_vars({"greeting": text})
    long = announcement("caller: " + "water everywhere " * 60, "1")
    assert len(long) <= MAX_VAR_CHARS and long.endswith("Press 1 to acknowledge.")
    assert "water everywhere" in long
