"""A plain call on the real path: the caller hears the greeting, asks, and hears the answer."""

from __future__ import annotations

import pytest
from speech import OPENING_HOURS, phrase

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]


@pytest.mark.parametrize("edition", ["voxcom", "upstream"])
def test_greeting_then_answer_heard_on_the_wire(callpath, edition):
    path = callpath(edition)
    call = path.call(hangup_after_ms=40000)
    assert call.wait_answered(15), "no 200 OK for the carrier"
    greeting = call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0)
    assert greeting is not None, "caller heard no greeting"
    spoken_end = call.say(phrase(OPENING_HOURS))
    end_of_speech = call.wait_said()
    answer = call.wait_speech(since=end_of_speech, min_s=1.5, timeout=20)
    assert answer is not None, "caller heard no answer"
    latency = answer[0] - end_of_speech
    print(f"\n[{edition}] greeting {greeting[1] - greeting[0]:.2f} s; first-reply latency "
          f"(end of caller speech -> first reply RTP at the caller) {latency * 1000:.0f} ms")
    assert spoken_end <= end_of_speech + 1
