"""POST /calls places a call through the edge to the carrier (a SIPp callee) on the real FreeSWITCH:
the callee hears the agent's greeting; busy, no answer and a refusal are reported with their SIP cause."""

from __future__ import annotations

import time

import httpx
import pytest
from callees import refusing, ringing_forever, swap_callee
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

AUTH = {"Authorization": f"Bearer {ADMIN.split(':', 2)[2]}"}


def dial(path, **body) -> httpx.Response:
    return httpx.post(f"{path.gateway.admin_url}/calls", json=body, headers=AUTH, timeout=10)


def call_info(path, call_id: str) -> dict:
    r = httpx.get(f"{path.gateway.admin_url}/calls/{call_id}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_state(path, call_id: str, states: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    info = call_info(path, call_id)
    while info["state"] not in states and time.monotonic() < deadline:
        time.sleep(0.1)
        info = call_info(path, call_id)
    assert info["state"] in states, info
    return info


def ruri_user(invite) -> str:
    uri = invite.first_line.split()[1]
    return uri.split(":", 1)[1].split("@", 1)[0]


def test_answered_outbound_call_the_callee_hears_the_greeting(outpath):
    path = outpath()
    swap_callee(path, ring_ms=400)
    r = dial(path, to="+15550100", variables={"customer": "Ada Lovelace", "order": "A-1"})
    assert r.status_code == 202, r.text
    call_id = r.json()["id"]
    invite = path.human.wait_received("INVITE", 15)
    assert invite is not None, "no INVITE reached the carrier"
    assert ruri_user(invite) == "+15550100", invite.first_line
    assert "+15550001000" in (invite.header("From") or ""), invite.header("From")
    assert path.edge is not None and path.edge.private[0] in (invite.header("Via") or ""), invite.text
    info = wait_state(path, call_id, {"answered"}, 20)
    answered = time.monotonic()
    # The callee hears the agent: the profile's greeting, a couple of seconds of speech.
    deadline = time.monotonic() + 20
    heard = 0.0
    while time.monotonic() < deadline and heard < 2.0:
        time.sleep(0.2)
        heard = path.human_rtp.speech_seconds(since=answered - 1)
    assert heard >= 2.0, f"the callee heard {heard:.2f} s of the agent"
    kinds = [e["type"] for e in call_info(path, call_id)["events"]]
    assert kinds[:4] == ["call.queued", "call.dialing", "call.ringing", "call.answered"], kinds
    live = call_info(path, call_id).get("live")
    assert live is not None and live["profile"] == "front-desk", live
    r = httpx.post(f"{path.gateway.admin_url}/calls/{call_id}/hangup", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    info = wait_state(path, call_id, {"completed"}, 15)
    assert info["answered_at"] and info["ended_at"], info


@pytest.mark.parametrize(("scenario", "state", "sip"), [
    (lambda: refusing(486, "Busy Here"), "busy", 486),
    (lambda: ringing_forever(), "no_answer", None),
    # (not 503: the edge, a proxy, must turn a 503 into 500 upstream, RFC 3261 section 16.7)
    (lambda: refusing(404, "Not Found"), "failed", 404),
], ids=["busy", "no-answer", "failed"])
def test_unanswered_outcomes_carry_the_sip_cause(outpath, scenario, state, sip):
    path = outpath()
    swap_callee(path, scenario())
    r = dial(path, to="+15550111", ring_timeout_s=3)
    assert r.status_code == 202, r.text
    info = wait_state(path, r.json()["id"], {"busy", "no_answer", "failed", "completed"}, 30)
    assert info["state"] == state, info
    if sip is not None:
        assert info["sip_status"] == sip, info
    assert info["hangup_cause"], info
    kinds = [e["type"] for e in info["events"]]
    assert "call.ringing" in kinds and kinds[-1] == f"call.{state}", kinds
    assert path.fs.wait_channels(0, timeout=5) == 0
