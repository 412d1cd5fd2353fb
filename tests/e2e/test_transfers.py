"""Transfers and escalations leave FreeSWITCH through the edge and reach the human (the SIPp UAS the
edge's CARRIER_TERM_URI points at) with the right R-URI and headers; the caller then hears the human."""

from __future__ import annotations

import time

import pytest
from harness.sipp import SipMessage
from speech import HUMAN, YES, phrase

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

HUMAN_SAYS = "Hello, this is Sam from billing."


def ruri_user(invite: SipMessage) -> str:
    uri = invite.first_line.split()[1]
    return uri.split(":", 1)[1].split("@", 1)[0] if "@" in uri else ""


def caller_hears_the_human(path, call) -> None:
    """The human speaks; the caller must hear speech that came from the human leg."""
    t = time.monotonic()
    path.human_rtp.say(phrase(HUMAN_SAYS))
    heard = call.wait_speech(since=t, min_s=1.0, timeout=10, quiet_s=0.3)
    assert heard is not None, "the caller did not hear the human after the transfer"


@pytest.mark.parametrize(("target", "user"), [("2001", "2001"), ("sip:+15550199@trunk", "+15550199")],
                         ids=["number", "sip-uri"])
def test_admin_transfer_reaches_the_human_with_the_number_in_the_ruri(callpath, target, user):
    path = callpath("voxcom")
    call = path.call(wait_bye_s=60)
    assert call.wait_answered(15)
    # After the whole greeting: acting while reply audio is queued is item 1 (the voxcom wedge), tested
    # in test_hangup_and_wedge.py; here only the routing is under test.
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=15, quiet_s=1.0) is not None
    uuid = path.gateway.wait_call_uuid()
    r = path.gateway.post(f"/calls/{uuid}/transfer", {"target": target})
    assert r.status_code == 200, r.text
    invite = path.human.wait_received("INVITE", 15)
    assert invite is not None, "the transfer never reached the human"
    # Item 4: the R-URI the human receives carries the number (not the edge's own address).
    assert ruri_user(invite) == user, invite.first_line
    # It came through the edge (the edge record-routes and is the last Via hop).
    assert f"{path.addrs.edge}" in (invite.header("Via") or ""), invite.text
    time.sleep(0.5)
    caller_hears_the_human(path, call)


def test_escalation_by_the_model_carries_the_ai_headers(callpath):
    path = callpath("voxcom")
    call = path.call(wait_bye_s=60)
    assert call.wait_answered(15)
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=15, quiet_s=1.0) is not None
    # The embedded engine asks before it transfers (an action with consequences, issue 18).
    assert call.ask_and_confirm(phrase(HUMAN), phrase(YES)) is not None, \
        "the agent did not ask before transferring"
    invite = path.human.wait_received("INVITE", 25)
    assert invite is not None, "the escalation never reached the human"
    assert ruri_user(invite) == "+15550199", invite.first_line
    assert invite.header("X-AI-Reason"), invite.text
    assert invite.header("X-AI-Urgency") == "normal", invite.text
    assert invite.header("X-AI-Summary"), invite.text


