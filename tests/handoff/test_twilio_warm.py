"""Warm transfer with an AI briefing and coach on a Twilio Media Streams call (handoff/twilio_warm.py).

The test plays Twilio: the caller's and the coach's Media Streams (gateway.client.twilio_call, signed
upgrades), the REST API (tests/fakes/twilio_rest.py, recording every request), and the signed status
callbacks and coach-leg voice webhook Twilio would send. The model is the scripted Realtime fake. What is
asserted is what Twilio would receive (conference TwiML, participant parameters) and what the human
would hear (the audio the gateway sends on the coach's stream, and the text it had the model speak).
This area's addresses: 127.0.7.0/24, free ports.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from fakes.twilio_rest import FakeTwilioRest
from handoff_env import PROFILE, STREAM_TOKEN

from gateway.client.twilio_call import new_sid, place_twilio_call
from gateway.fallback import FallbackPrompts
from gateway.profiles import load_profiles
from gateway.serve import Gateway
from gateway.settings import DEFAULT_PROFILES_DIR, Settings

HOST = "127.0.7.1"
TOKEN = secrets.token_hex(16)
ACCOUNT = "AC" + "ab" * 16
SAID = "My name is Ann Lee, call me back on 415 555 0199, I want a manager"
HOLD = "https://hold.example/music.mp3"
COACH_TO = "sip:ai-coach@desk.sip.twilio.com"
ESCALATE = {"name": "escalate", "arguments": {"reason": "manager", "urgency": "high"}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def rest():
    fake = await FakeTwilioRest(ACCOUNT, TOKEN, host=HOST).start()
    yield fake
    await fake.close()


@pytest.fixture
async def twilio_gateway(tmp_path: Path, rest: FakeTwilioRest):
    started: list[Gateway] = []

    async def make(model_url: str, **handoff: Any) -> Gateway:
        profiles = tmp_path / f"profiles{len(started)}"
        profiles.mkdir()
        block = {**PROFILE["handoff"], "mode": "warm", "max_hops": 2, "accept_timeout_s": 20,
                 "targets": [{"target": "billing", "timeout_s": 8}, {"target": "human", "queue": "managers"}],
                 "twilio": {"coach_to": COACH_TO, "hold_url": HOLD}, **handoff}
        doc = {**PROFILE, "handoff": block,
               "transfer_targets": {"billing": "+15550101", "human": "sip:+15550199@trunk.example"}}
        (profiles / "desk.yaml").write_text(yaml.safe_dump(doc))
        (profiles / "briefing.yaml").write_text((DEFAULT_PROFILES_DIR / "briefing.yaml").read_text())
        port = _free_port()
        settings = Settings(media_host=HOST, media_port=port, admin_host=HOST, admin_port=0,
                            auth_tokens=STREAM_TOKEN, shutdown_timeout_s=2.0, model_connect_timeout_s=2.0,
                            profiles_dir=profiles, default_profile="desk", model_url=model_url,
                            twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT,
                            twilio_api_base_url=rest.base_url, twilio_public_url=f"http://{HOST}:{port}")
        loaded = load_profiles(profiles, "desk")
        gw = Gateway(settings, profiles=loaded, fallback=FallbackPrompts(loaded))
        await gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.shutdown(drain_timeout=0.5)


async def _until(what, within_s: float = 15.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        got = what()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


def _creates(rest: FakeTwilioRest) -> list[Any]:
    return [r for r in rest.participant_requests() if r.path.endswith("/Participants.json")]


def _updates(rest: FakeTwilioRest, sid: str) -> list[dict[str, str]]:
    return [r.form for r in rest.participant_requests() if r.path.endswith(f"/Participants/{sid}.json")]


def _call_updates(rest: FakeTwilioRest, sid: str) -> list[dict[str, str]]:
    return [r.form for r in rest.requests if r.path.endswith(f"/Calls/{sid}.json") and r.method == "POST"]


def _stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}


class Twilio:
    """Twilio's side of one warm transfer: the caller's stream, the callbacks, the coach leg."""

    def __init__(self, gw: Gateway, rest: FakeTwilioRest, manager_wav: Path) -> None:
        self.gw, self.rest, self.wav = gw, rest, manager_wav
        self.base = f"http://{HOST}:{gw.media_port}"
        self.caller_sid = ""
        self.conference_sid = "CF" + secrets.token_hex(16)
        self.events_url = ""

    async def escalating_caller(self, **parameters: str) -> ET.Element:
        """The caller talks, the AI escalates and moves them to the conference: its TwiML."""
        call = asyncio.create_task(place_twilio_call(
            f"ws://{HOST}:{self.gw.media_port}/twilio/stream", self.wav, auth_token=TOKEN, profile="desk",
            reply_timeout=8, parameters=parameters or None))
        try:
            update = await _until(lambda: [r for r in self.rest.requests if "/Calls/" in r.path
                                           and "Twiml" in r.form], 30)
        finally:  # Twilio ends the caller's <Connect><Stream> when the call gets new TwiML
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
        self.caller_sid = update[0].path.rsplit("/", 1)[1].removesuffix(".json")
        root = ET.fromstring(update[0].form["Twiml"])
        conf = root.find("./Dial/Conference")
        assert conf is not None, update[0].form["Twiml"]
        self.events_url = conf.get("statusCallback", "")
        return conf

    async def event(self, **params: str) -> int:
        status, _ = await self.rest.signed_post(self.events_url, {"AccountSid": ACCOUNT, **params})
        return status

    async def caller_joins(self, conference: str) -> None:
        assert await self.event(StatusCallbackEvent="participant-join", ConferenceSid=self.conference_sid,
                                FriendlyName=conference, CallSid=self.caller_sid) == 204

    async def human(self, index: int, *statuses: str) -> Any:
        """The index-th participant created; Twilio reports `statuses` for its call."""
        create = (await _until(lambda: _creates(self.rest)[index:index + 1]))[0]
        sid = self.rest.added[index]  # the CallSid the fake answered the create with
        for status in statuses:
            assert await self.event(CallSid=sid, CallStatus=status, ConferenceSid=self.conference_sid,
                                    CallbackSource="call-progress-events") == 204
        return create, sid

    async def coach_webhook(self, to: str, token: str, coach_sid: str) -> tuple[int, str]:
        headers = {k: v[0] for k, v in parse_qs(urlsplit(to).query).items()}
        params = {"AccountSid": ACCOUNT, "CallSid": coach_sid, "From": "+15550100",
                  "To": to.split("?", 1)[0], "SipDomain": "desk.sip.twilio.com", "CallStatus": "ringing",
                  "SipHeader_X-AI-Handoff-Id": headers["X-AI-Handoff-Id"],
                  "SipHeader_X-AI-Coach-Token": token}
        return await self.rest.signed_post(f"{self.base}/twilio/voice", params)


async def _coach_leg(tw: Twilio, coach_create: Any, model: Any, manager_wav: Path, say: str) -> Any:
    """The coach participant reaches /twilio/voice and streams back; the human answers aloud (`say`)."""
    to = coach_create.form["To"]
    token = parse_qs(urlsplit(to).query)["X-AI-Coach-Token"][0]
    coach_sid = new_sid("CA")
    status, body = await tw.coach_webhook(to, "not-the-token", coach_sid)  # a stranger naming the handoff
    assert status == 200 and ET.fromstring(body).find("Reject") is not None, body
    status, body = await tw.coach_webhook(to, token, coach_sid)
    assert status == 200, body
    url, params = _stream_of(body)
    assert url == f"ws://{HOST}:{tw.gw.media_port}/twilio/stream"
    assert params["caller"] == "ai-briefing" and params["handoff_id"] and params["profile"] == "briefing"
    model.script.tool = {"name": say, "arguments": {}}  # what the fake model does on the human's speech
    return await place_twilio_call(url, manager_wav, auth_token=TOKEN, call_sid=coach_sid,
                                   parameters={k: v for k, v in params.items() if k != "callSid"},
                                   profile=params["profile"], caller="ai-briefing", called="ai-briefing",
                                   reply_timeout=8, greeting_timeout=15)


def _said(model: Any) -> list[str]:
    return [(e.get("response") or {}).get("instructions", "") for s in model.sessions
            for e in s.of_type("response.create")]


async def test_caller_held_busy_then_human_briefed_by_coach_and_accepts(twilio_gateway, fake_model, rest,
                                                                       manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url, coach=True)
    tw = Twilio(gw, rest, manager_wav)
    conf = await tw.escalating_caller()
    # The caller heard the AI say it is getting someone, then went into the named conference on hold audio.
    assert any('"Please hold on, I am getting a colleague for you."' in s for s in _said(model))
    name = (conf.text or "").strip()
    assert name.startswith("ai-ho_")
    assert conf.attrib == {"startConferenceOnEnter": "false", "endConferenceOnExit": "true", "beep": "false",
                           "waitUrl": HOLD, "statusCallback": f"{tw.base}/twilio/handoff/{name[3:]}/events",
                           "statusCallbackEvent": "join leave end"}
    # An unsigned callback is refused and changes nothing.
    status, _ = await rest.signed_post(tw.events_url, {"StatusCallbackEvent": "participant-join",
                                                       "CallSid": tw.caller_sid}, signature="forged")
    assert status == 403
    await asyncio.sleep(0.3)
    assert rest.participant_requests() == []
    await tw.caller_joins(name)
    hold = (await _until(lambda: _updates(rest, tw.caller_sid)))[0]
    assert hold == {"Hold": "true", "HoldUrl": HOLD}
    assert rest.participant_requests()[0].path == \
        f"/2010-04-01/Accounts/{ACCOUNT}/Conferences/{tw.conference_sid}/Participants/{tw.caller_sid}.json"

    # First target: busy.
    first, first_sid = await tw.human(0, "ringing", "busy")
    assert {k: v for k, v in first.form.items() if k != "StatusCallbackEvent"} == {
                          "From": "+15550100", "To": "+15550101", "Label": "human", "Timeout": "8",
                          "StatusCallback": tw.events_url, "StatusCallbackMethod": "POST",
                          "StartConferenceOnEnter": "true",
                          "EndConferenceOnExit": "false", "Beep": "false", "EarlyMedia": "false"}
    assert [v for k, v in first.pairs if k == "StatusCallbackEvent"] == ["initiated", "ringing", "answered",
                                                                         "completed"]
    # Second target: a SIP address carrying the handoff's X-AI-* headers; it answers.
    second, human_sid = await tw.human(1, "ringing", "in-progress")
    to = second.form["To"]
    assert to.startswith("sip:+15550199@trunk.example?")
    headers = {k: v[0] for k, v in parse_qs(urlsplit(to).query).items()}
    assert headers["X-AI-Hops"] == "1" and headers["X-AI-Queue"] == "managers"
    assert "415 555" not in to
    handoff_id = headers["X-AI-Handoff-Id"]
    assert name == f"ai-{handoff_id}"
    assert second.form["Timeout"] == "20"
    # The AI coach joins, heard only by the human who answered.
    coach = (await _until(lambda: _creates(rest)[2:3]))[0]
    assert coach.form["Coaching"] == "true" and coach.form["CallSidToCoach"] == human_sid
    assert coach.form["Label"] == "ai-coach" and coach.form["StartConferenceOnEnter"] == "false"
    assert coach.form["To"].startswith(COACH_TO + f"?X-AI-Handoff-Id={handoff_id}&X-AI-Coach-Token=")
    assert coach.path == f"/2010-04-01/Accounts/{ACCOUNT}/Conferences/{tw.conference_sid}/Participants.json"

    heard = await _coach_leg(tw, coach, model, manager_wav, "accept_handoff")
    # What the human heard on the coach's leg: the briefing (spoken by the model), audio sent to Twilio.
    briefing = [s for s in _said(model) if "Incoming call from Ann Lee." in s]
    assert briefing and "Say yes to take the call, or no to decline." in briefing[0], _said(model)
    assert heard.heard_s > 0.2 and not heard.errors, heard
    # Accepted aloud: the caller leaves hold, the human now ends the conference on leaving.
    unhold = await _until(lambda: _updates(rest, tw.caller_sid)[1:2])
    assert unhold == [{"Hold": "false"}]
    assert await _until(lambda: _updates(rest, human_sid)) == [{"EndConferenceOnExit": "true"}]
    h = gw.handoffs.store.get(handoff_id)
    assert h is not None
    await _until(lambda: h.state == "accepted")
    assert [(a.target, a.result) for a in h.attempts] == [("billing", "busy"), ("human", "accepted")]
    # The coach stops coaching so both hear the short introduction, then whispers to the human again
    # (coach: true keeps it on: its call is not ended).
    coach_part = rest.added[2]
    await _until(lambda: _updates(rest, coach_part)[1:2])
    assert _updates(rest, coach_part) == [{"Coaching": "false"},
                                          {"Coaching": "true", "CallSidToCoach": human_sid}]
    _introduced_while_not_coaching(rest, model, heard, coach_part, tw.caller_sid, "human")
    assert _call_updates(rest, coach_part) == []


def _introduced_while_not_coaching(rest: FakeTwilioRest, model: Any, heard: Any, coach_part: str,
                                   caller_sid: str, target: str) -> None:
    """The coach said the introduction, and its audio went out on the coach's stream after the caller
    left hold and the coach stopped coaching, and before it whispered again or left."""
    intro = f'Say exactly: "I have a colleague from {target} on the line for you now. Connecting you."'
    assert intro in _said(model), _said(model)
    reqs = [r for r in rest.requests if r.path.endswith((f"/{coach_part}.json", f"/{caller_sid}.json"))]
    unhold = next(r for r in reqs if r.form == {"Hold": "false"})
    off = next(r for r in reqs if r.form == {"Coaching": "false"})
    after = next(r for r in reqs if r.at > off.at and r.form != {"Coaching": "false"})
    assert unhold.at < off.at
    sent = sum(n for t, n in heard.reply_arrivals if off.at < t < after.at)
    assert sent >= 0.25 * 8000, f"{sent} bytes of introduction on the coach's stream while not coaching"
    assert not [t for t, _ in heard.reply_arrivals if t > after.at], "the coach spoke after the introduction"


async def test_accepted_without_coach_the_coach_introduces_then_leaves(twilio_gateway, fake_model, rest,
                                                                       manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url, coach=False)
    tw = Twilio(gw, rest, manager_wav)
    conf = await tw.escalating_caller()
    await tw.caller_joins((conf.text or "").strip())
    _, human_sid = await tw.human(0, "ringing", "in-progress")
    coach = (await _until(lambda: _creates(rest)[1:2]))[0]
    coach_part = rest.added[1]
    heard = await _coach_leg(tw, coach, model, manager_wav, "accept_handoff")
    # The coach stops coaching, introduces the colleague to both, then its call is ended.
    assert await _until(lambda: _call_updates(rest, coach_part)) == [{"Status": "completed"}]
    assert _updates(rest, coach_part) == [{"Coaching": "false"}]
    assert _updates(rest, tw.caller_sid) == [{"Hold": "true", "HoldUrl": HOLD}, {"Hold": "false"}]
    _introduced_while_not_coaching(rest, model, heard, coach_part, tw.caller_sid, "billing")


async def test_spoken_decline_then_no_one_takes_the_caller_back_to_the_ai(twilio_gateway, fake_model, rest,
                                                                          manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url)
    tw = Twilio(gw, rest, manager_wav)
    conf = await tw.escalating_caller()
    await tw.caller_joins((conf.text or "").strip())
    _, first_sid = await tw.human(0, "ringing", "no-answer")
    _, human_sid = await tw.human(1, "ringing", "in-progress")
    coach = (await _until(lambda: _creates(rest)[2:3]))[0]
    coach_sid = rest.added[2]
    await _coach_leg(tw, coach, model, manager_wav, "decline_handoff")
    # Declined: the human's and the coach's calls are ended through the API.
    assert await _until(lambda: _call_updates(rest, human_sid)) == [{"Status": "completed"}]
    assert await _until(lambda: _call_updates(rest, coach_sid)) == [{"Status": "completed"}]
    assert _call_updates(rest, first_sid) == []  # Twilio had ended the unanswered one itself
    # Nobody left: the caller is taken back to an AI on this gateway, the hop counted.
    back = (await _until(lambda: _call_updates(rest, tw.caller_sid)[1:2]))[0]
    url, params = _stream_of(back["Twiml"])
    assert url == f"ws://{HOST}:{gw.media_port}/twilio/stream"
    assert params["hops"] == "1" and params["profile"] == "desk"
    assert params["handoff_return"].startswith("ho_")
    h = gw.handoffs.store.get(params["handoff_return"])
    assert h is not None
    assert [(a.target, a.result) for a in h.attempts] == [("billing", "no_answer"), ("human", "declined")]
    model.script.tool = None
    before = len(_said(model))
    summary = await place_twilio_call(url, b"\x00\x00" * 1600, auth_token=TOKEN, call_sid=tw.caller_sid,
                                      profile="desk", parameters={k: v for k, v in params.items()
                                                                  if k != "callSid"}, reply_timeout=3)
    spoken = _said(model)[before:]
    assert spoken and spoken[0] == ('Say exactly: "I\'m sorry, no one is available right now. I can keep '
                                    'helping you myself."'), spoken
    assert summary.heard_s > 0.2


async def test_hop_cap_refuses_a_twilio_warm_transfer(twilio_gateway, fake_model, rest, manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url)
    summary = await place_twilio_call(f"ws://{HOST}:{gw.media_port}/twilio/stream", manager_wav,
                                      auth_token=TOKEN, profile="desk", reply_timeout=4,
                                      parameters={"hops": "2"})
    assert not summary.errors
    # No conference, no participant: the call had been handed on twice already (max_hops 2).
    assert rest.requests == []
    outputs = [e for s in model.sessions for e in s.of_type("conversation.item.create")
               if e["item"].get("type") == "function_call_output"]
    assert outputs and '"hop_limit": true' in outputs[0]["item"]["output"], outputs


async def test_coach_webhook_for_an_unknown_handoff_is_rejected(twilio_gateway, fake_model, rest):
    model = await fake_model()
    gw = await twilio_gateway(model.url)
    params = {"AccountSid": ACCOUNT, "CallSid": new_sid("CA"), "From": "+15550100", "To": COACH_TO,
              "SipHeader_X-AI-Handoff-Id": "ho_" + "x" * 20, "SipHeader_X-AI-Coach-Token": "guess"}
    status, body = await rest.signed_post(f"http://{HOST}:{gw.media_port}/twilio/voice", params)
    assert status == 200 and ET.fromstring(body).find("Reject") is not None
    status, _ = await rest.signed_post(f"http://{HOST}:{gw.media_port}/twilio/handoff/ho_{'x' * 20}/events",
                                       {"CallSid": new_sid("CA"), "CallStatus": "in-progress"})
    assert status == 404


async def test_twilio_refusing_the_move_leaves_the_caller_with_their_ai(twilio_gateway, fake_model, rest,
                                                                        manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url)
    sid = new_sid("CA")
    rest.unknown_calls.add(sid)  # Twilio answers the caller's Call update with 404
    call = asyncio.create_task(place_twilio_call(f"ws://{HOST}:{gw.media_port}/twilio/stream", manager_wav,
                                                 auth_token=TOKEN, profile="desk", call_sid=sid,
                                                 reply_timeout=8))
    carry_on = 'Say exactly: "I\'m sorry, no one is available right now. I can keep helping you myself."'
    try:
        await _until(lambda: carry_on in _said(model), 30)
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    assert rest.participant_requests() == []


async def test_human_hangs_up_while_briefed_then_the_caller_leaves_while_the_next_rings(
        twilio_gateway, fake_model, rest, manager_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, caller_transcript=SAID, tool=ESCALATE)
    gw = await twilio_gateway(model.url)
    tw = Twilio(gw, rest, manager_wav)
    conf = await tw.escalating_caller()
    await tw.caller_joins((conf.text or "").strip())
    _, first_sid = await tw.human(0, "ringing", "in-progress")
    await _until(lambda: _creates(rest)[1:2])  # the coach is added
    coach_sid = rest.added[1]
    # The human hangs up during the briefing: the coach's call is ended, the next target rings.
    assert await tw.event(CallSid=first_sid, CallStatus="completed", ConferenceSid=tw.conference_sid) == 204
    assert await _until(lambda: _call_updates(rest, coach_sid)) == [{"Status": "completed"}]
    second = (await _until(lambda: _creates(rest)[2:3]))[0]
    second_sid = rest.added[2]
    assert second.form["Label"] == "human" and second.form["To"].startswith("sip:+15550199@trunk.example?")
    # The caller hangs up while it rings: that call is ended too, nobody else is dialled, the caller is gone.
    assert await tw.event(StatusCallbackEvent="participant-leave", ConferenceSid=tw.conference_sid,
                          CallSid=tw.caller_sid) == 204
    assert await _until(lambda: _call_updates(rest, second_sid)) == [{"Status": "completed"}]
    handoff_id = parse_qs(urlsplit(second.form["To"]).query)["X-AI-Handoff-Id"][0]
    h = gw.handoffs.store.get(handoff_id)
    assert h is not None
    await _until(lambda: h.state == "failed")
    assert [(a.target, a.result) for a in h.attempts] == [("billing", "declined"), ("human", "caller_gone")]
    await asyncio.sleep(0.3)
    assert len(_creates(rest)) == 3
    assert len(_call_updates(rest, tw.caller_sid)) == 1  # only the move: no way back for a caller who left


async def test_a_call_handed_on_with_ai_headers_is_an_ordinary_call(twilio_gateway, fake_model, rest):
    model = await fake_model()
    gw = await twilio_gateway(model.url)
    params = {"AccountSid": ACCOUNT, "CallSid": new_sid("CA"), "From": "sip:pbx@pbx.example", "To": COACH_TO,
              "SipHeader_X-AI-Handoff-Id": "ho_" + "y" * 20, "SipHeader_X-AI-Hops": "1"}
    status, body = await rest.signed_post(f"http://{HOST}:{gw.media_port}/twilio/voice", params)
    assert status == 200
    url, stream = _stream_of(body)
    assert stream["profile"] == "desk" and stream["hops"] == "1" and "handoff_id" not in stream
