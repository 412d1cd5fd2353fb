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
