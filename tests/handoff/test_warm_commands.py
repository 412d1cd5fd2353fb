"""The pure parts of the warm transfer: the originate command line (its variable list must survive
FreeSWITCH's argument and `{...}` splitting) and the hangup cause of a failed originate."""

from __future__ import annotations

import pytest

from gateway.handoff.warm import RESULT_OF_CAUSE, _cause, originate_command

H = "0b6c5cbc-3f2f-4a49-9e35-7c1f8e3b9d10"


def test_originate_runs_the_briefing_extension_with_the_variables():
    cmd = originate_command(H, "sofia/gateway/kamailio-edge/2001",
                            {"ai_handoff_id": "ho_abcdefghijklmnop", "sip_h_X-AI-Hops": "1",
                             "sip_h_X-AI-Summary": "Caller Ann said: billing, refund. Callback [PHONE]."},
                            15.0)
    assert cmd.startswith(f"originate {{origination_uuid={H},ai_handoff_id=ho_abcdefghijklmnop,")
    assert cmd.endswith("}sofia/gateway/kamailio-edge/2001 ai-briefing XML ai-gateway AI 0000000000 15")
    # spaces quoted, commas (the list separator) gone from the value
    assert "sip_h_X-AI-Summary='Caller Ann said: billing; refund. Callback [PHONE].'" in cmd
    body = cmd[cmd.index("{") + 1:cmd.index("}")]
    assert len(body.split(",")) == 4


@pytest.mark.parametrize("bad", ["it's", "a}b", "a{b", "back\\slash", "line\nbreak"])
def test_values_that_could_break_the_command_are_refused(bad):
    with pytest.raises(ValueError):
        originate_command(H, "sofia/gateway/kamailio-edge/2001", {"sip_h_X-AI-Reason": bad}, 10)


def test_a_malformed_leg_uuid_is_refused():
    from gateway.esl.errors import EslArgumentError

    with pytest.raises(EslArgumentError):
        originate_command("x y", "sofia/gateway/kamailio-edge/2001", {}, 10)


@pytest.mark.parametrize(("reply", "result"), [("-ERR USER_BUSY\n", "busy"), ("-ERR NO_ANSWER", "no_answer"),
                                               ("-ERR CALL_REJECTED", "declined"),
                                               ("-ERR ORIGINATOR_CANCEL", "no_answer")])
def test_originate_failures_map_to_what_the_caller_is_told(reply, result):
    assert RESULT_OF_CAUSE[_cause(reply)] == result
    assert _cause("-ERR") == "UNKNOWN"
