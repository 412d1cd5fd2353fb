"""The originate command is built from checked values only: nothing a request sends can add a channel
variable, change the dial string or the dialplan target."""

from __future__ import annotations

import uuid

import pytest

from gateway.outbound.context import call_context
from gateway.outbound.originate import OriginateError, decode_vars, encode_vars, originate_command
from gateway.outbound.progress import classify_end

U = str(uuid.uuid4())


def build(**kw):
    args = dict(uuid=U, to="+15550100", caller_id="+15550001000", profile="front-desk", tenant="default",
                outbound_id=U, ring_timeout_s=30)
    args.update(kw)
    return originate_command(**args)


def test_the_command_dials_through_the_edge_gateway_into_the_ai_outbound_extension():
    cmd = build(variables={"name": "Ada Lovelace, PhD", "note": "a=b}{c'd\""})
    assert cmd.startswith("originate {origination_uuid=" + U + ",")
    assert cmd.endswith("}sofia/gateway/kamailio-edge/+15550100 ai-outbound XML ai-gateway")
    assert "origination_caller_id_number=+15550001000" in cmd
    assert "originate_timeout=30" in cmd and "ignore_early_media=true" in cmd
    # one space-free token before the extension: the variables cannot break out
    assert len(cmd.split(" ")) == 5
    body = cmd[len("originate {"):cmd.index("}sofia/")]
    pairs = dict(p.split("=", 1) for p in body.split(","))
    assert decode_vars(pairs["ai_vars"]) == {"name": "Ada Lovelace, PhD", "note": "a=b}{c'd\""}


@pytest.mark.parametrize(("field", "value"), [
    ("to", "+1555 0100"), ("to", "1000,origination_uuid=x"), ("to", "sip:x@y"), ("to", "1"),
    ("caller_id", "+1555}x"), ("caller_id", "anonymous"), ("profile", "front desk"),
    ("profile", "a,b=c"), ("tenant", "Acme"), ("ring_timeout_s", 0),
])
def test_values_that_could_alter_the_command_are_refused(field, value):
    with pytest.raises(OriginateError):
        build(**{field: value})


def test_variables_are_bounded_and_named_plainly():
    with pytest.raises(OriginateError):
        encode_vars({"bad name": "x"})
    with pytest.raises(OriginateError):
        encode_vars({"x": "a" * 300})
    with pytest.raises(OriginateError):
        encode_vars({f"v{i}": "x" for i in range(40)})
    with pytest.raises(OriginateError):
        encode_vars({"x": "line\nbreak"})
    assert decode_vars("%7Bnot json") == {}
    assert decode_vars(123) == {}


def test_the_agent_is_told_the_direction_and_the_variables():
    text = call_context({"direction": "outbound", "vars": encode_vars({"customer": "Ada", "order": "A-1"})})
    assert "outbound call" in text and "- customer: Ada" in text and "- order: A-1" in text
    assert call_context({"caller": "x"}) == ""


@pytest.mark.parametrize(("cause", "status", "answered", "state"), [
    ("NORMAL_CLEARING", 200, True, "completed"),
    ("USER_BUSY", 486, False, "busy"),
    ("USER_BUSY", None, False, "busy"),
    ("NORMAL_CLEARING", 600, False, "busy"),
    ("NO_ANSWER", 487, False, "no_answer"),
    ("NO_USER_RESPONSE", None, False, "no_answer"),
    ("UNALLOCATED_NUMBER", 404, False, "failed"),
    ("NORMAL_TEMPORARY_FAILURE", 500, False, "failed"),
    ("ORIGINATOR_CANCEL", 487, False, "canceled"),
])
def test_hangup_causes_map_to_outcomes(cause, status, answered, state):
    assert classify_end(cause, status, answered) == state
