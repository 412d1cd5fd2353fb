"""Warm transfer on a Twilio Media Streams call: the caller is held in a Twilio conference, the human is
added as a participant, and an AI coach that only the human hears briefs them; the caller is let in
when the human accepts. Same `escalate` tool, admin verb and `handoff:` profile block as on SIP
(gateway/handoff/warm.py), with `handoff.twilio` naming the coach's way back (docs/handoff.md).

    1. the caller's AI says "please hold", then the caller's call gets new TwiML (Call update,
       https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource):
         <Dial><Conference startConferenceOnEnter="false" endConferenceOnExit="true" beep="false"
               waitUrl=HOLD statusCallback=EVENTS statusCallbackEvent="join leave end">ai-<handoff id>
       (https://www.twilio.com/docs/voice/twiml/conference). Twilio ends the caller's <Connect><Stream>
       on that redirect, so the caller's AI session ends here; the caller hears the hold audio (waitUrl).
    2. when Twilio reports the caller's `participant-join`, the caller is put on hold (Participant
       update Hold=true, HoldUrl=HOLD): the human and the coach never hear the caller, nor the caller them.
    3. each target: Participant create (https://www.twilio.com/docs/voice/api/conference-participant-resource)
       From, To (a sip: target carries the X-AI-* headers as URI parameters, as on the blind path),
       Timeout (the target's timeout_s), StatusCallback=EVENTS, StatusCallbackEvent initiated ringing
       answered completed, StartConferenceOnEnter=true, EndConferenceOnExit=false, Beep=false.
       busy / no-answer / failed / canceled -> next target (the caller keeps hearing the hold audio).
    4. the human answers (CallStatus in-progress): the AI coach is added as a participant with
       Coaching=true and CallSidToCoach=<the human's CallSid>, so only the human hears it. A Participant
       has no TwiML of its own, so its To is `handoff.twilio.coach_to`, a Twilio SIP domain address whose
       voice URL is this gateway's /twilio/voice, with X-AI-Handoff-Id and a one-time X-AI-Coach-Token as
       URI parameters; Twilio passes them to the webhook as SipHeader_X-... parameters
       (https://www.twilio.com/docs/voice/api/sip-twiml), and the webhook answers <Connect><Stream> with
       the handoff id as a <Parameter>: an AI session on that stream speaks the briefing
       (gateway/handoff/briefing.py) and takes the human's spoken yes/no (accept_handoff/decline_handoff).
    5. accept: the caller leaves hold (Hold=false), the human's EndConferenceOnExit becomes true, and
       the coach stops coaching (Participant update Coaching=false: everyone hears it) to say the short
       introduction the SIP path's caller AI says ("I have a colleague from ... on the line for you now.
       Connecting you."); once that has played (the stream's marks), the coach goes back to whispering
       (Coaching=true, CallSidToCoach=<the human's CallSid>) when the profile says `coach: true`, else
       its leg is ended. Update Participant takes Coaching and CallSidToCoach (CallSidToCoach required
       when Coaching is true; https://www.twilio.com/docs/voice/api/conference-participant-resource
       #update-a-participant-resource).
       decline / no decision in accept_timeout_s / the human hangs up: the human's and the coach's calls
       are ended (Call update Status=completed) and the next target is tried.
    6. no one: the caller is taken back to the AI (Call update with <Connect><Stream> to this gateway,
       the handoff id as `handoff_return`, the hop count kept) whose first words are the profile's
       on_no_answer line; `hangup` says it with <Say> and hangs up.

Every callback (EVENTS = {twilio_public_url}/twilio/handoff/{id}/events) is checked with Twilio's
X-Twilio-Signature (gateway/twilio_webhook.py); an unsigned one is refused and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from gateway.call.control import CallControlError
from gateway.handoff.record import Handoff
from gateway.handoff.routing import HandoffPolicy, Target
from gateway.handoff.warm import INTRODUCE, NO_ONE
from gateway.log import fields, pii

log = logging.getLogger("gateway.handoff")

HOLD_TEXT = "Please hold on, I am getting a colleague for you."
BRIEFING_PROFILE = "briefing"  # the agent profile the coach's stream runs (as FreeSWITCH's briefing_profile)
PARTICIPANT_EVENTS = ["initiated", "ringing", "answered", "completed"]
# A participant's final CallStatus (https://www.twilio.com/docs/voice/api/call-resource#call-status-values)
# -> the attempt's result.
RESULT_OF_STATUS = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "no_answer",
                    "completed": "declined"}
JOIN_TIMEOUT_S = 20.0  # the caller's redirect into the conference

# Twilio connects the redirected call's <Connect><Stream> within seconds; a caller who hangs up before
# that never comes back, and what was kept for them goes after this long.
RETURNING_TTL_S = 120.0


class ReturningGreetings:
    """Handoff id -> (the caller's CallSid, the first words of the AI they come back to), each kept at
    most `ttl_s` on `clock`: taken once by the caller's new stream, or dropped unused."""

    def __init__(self, ttl_s: float = RETURNING_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self._clock = ttl_s, clock
        self._kept: dict[str, tuple[float, str, str]] = {}  # handoff id -> (expires, call sid, words)

    def __len__(self) -> int:
        self._expire()
        return len(self._kept)

    def put(self, handoff_id: str, call_sid: str, words: str) -> None:
        self._expire()
        self._kept.pop(handoff_id, None)  # re-inserted last: the dict stays in expiry order
        self._kept[handoff_id] = (self._clock() + self.ttl_s, call_sid, words)

    def take(self, handoff_id: str, call_sid: str) -> str | None:
        """The words for this handoff's caller (once); None for another call, or after the TTL."""
        self._expire()
        kept = self._kept.get(handoff_id)
        if kept is None or kept[1] != call_sid:
            return None
        del self._kept[handoff_id]
        return kept[2]

    def _expire(self) -> None:
        now = self._clock()
        while self._kept:
            first = next(iter(self._kept))
            if self._kept[first][0] > now:
                break
            del self._kept[first]
            log.info("twilio warm transfer: the caller never came back to the AI; greeting dropped",
                     extra=fields(handoff=first))


_ACTIVE: dict[str, TwilioWarmTransfer] = {}  # handoff id -> its transfer (callbacks and the coach leg)
_RETURNING = ReturningGreetings()


def active(handoff_id: str) -> TwilioWarmTransfer | None:
    return _ACTIVE.get(handoff_id)


def returning_greeting(handoff_id: str, call_id: str) -> str | None:
    """The caller is back from a warm transfer nobody took: what their new AI session says first (once,
    only on the call the handoff was made for, and only within RETURNING_TTL_S)."""
    return _RETURNING.take(handoff_id, call_id)


def conference_twiml(name: str, events_url: str, hold_url: str | None) -> str:
    response = VoiceResponse()
    dial = Dial()
    attrs: dict[str, Any] = {"start_conference_on_enter": False, "end_conference_on_exit": True,
                             "beep": False, "status_callback": events_url,
                             "status_callback_event": "join leave end"}
    if hold_url:
        attrs["wait_url"] = hold_url
    dial.conference(name, **attrs)
    response.append(dial)
    return str(response)


def stream_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def _uri_with_headers(uri: str, headers: dict[str, str]) -> str:
    return uri + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in headers.items())


class TwilioWarmTransfer:
    def __init__(self, call: Any, control: Any, policy: HandoffPolicy, handoff: Handoff,
                 targets: list[Target], service: Any, public_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert policy.twilio is not None
        self.call, self.control, self.policy, self.handoff = call, control, policy, handoff
        self.targets, self.service, self._clock = targets, service, clock
        self.twilio = policy.twilio
        base = public_url.rstrip("/")
        self.events_url = f"{base}/twilio/handoff/{handoff.id}/events"
        self.stream_url = ("wss" if base.startswith("https") else "ws") + base[base.index("://"):] + \
            "/twilio/stream"
        self.conference = f"ai-{handoff.id}"
        self.caller_sid: str = control.uuid
        self.conference_sid: str | None = None
        self.coach_token = secrets.token_urlsafe(18)
        self.coach_wanted = False
        self.coach_sid: str | None = None  # the coach's stream leg (the webhook's CallSid)
        self.coach_participant: str | None = None  # the coach's leg in the conference
        self.events: list[dict[str, str]] = []
        self._changed = asyncio.Event()
        self._decision: asyncio.Queue[bool] = asyncio.Queue()
        self.result: str | None = None
        self.moved = False  # the caller has left their AI session for the conference
        self.started = clock()

    # ------------------------------------------------------------------ Twilio -> us
    def event(self, params: dict[str, str]) -> None:
        """A signed status callback (conference or participant) for this transfer."""
        self.events.append(params)
        self._changed.set()

    def coach_leg(self, call_sid: str, token: str) -> bool:
        """The coach participant's leg reached /twilio/voice: True if it is the one we are waiting for."""
        if not self.coach_wanted or not hmac.compare_digest(token.encode(), self.coach_token.encode()):
            return False
        self.coach_wanted = False  # one-time
        self.coach_sid = call_sid
        self.service.await_decision(call_sid, self._decision.put_nowait)
        return True

    async def _wait(self, match: Callable[[dict[str, str]], bool], within_s: float,
                    start: int = 0) -> dict[str, str] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        i = start
        while True:
            while i < len(self.events):
                if match(self.events[i]):
                    return self.events[i]
                i += 1
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def _caller_left(self, e: dict[str, str]) -> bool:
        return e.get("StatusCallbackEvent") == "conference-end" or (
            e.get("StatusCallbackEvent") == "participant-leave" and e.get("CallSid") == self.caller_sid)

    # ------------------------------------------------------------------ the whole transfer
    async def run(self) -> str:
        _ACTIVE[self.handoff.id] = self
        try:
            self.result = await self._run()
            return self.result
        finally:
            _ACTIVE.pop(self.handoff.id, None)
            if self.coach_sid is not None:
                self.service.decision_done(self.coach_sid)
            self.handoff.state = "accepted" if self.result == "accepted" else "failed"

    async def _run(self) -> str:
        rest = self.control.rest
        twiml = conference_twiml(self.conference, self.events_url, self.twilio.hold_url)

        async def move() -> None:
            await self.control.request(lambda: rest.calls(self.caller_sid).update_async(twiml=twiml),
                                       "conference")
            self.control.release()  # the caller's stream ends now on purpose (Twilio stops it)

        self.handoff.state = "holding"
        try:
            await self.call.speak_then(HOLD_TEXT, move, "warm_transfer")
        except CallControlError as exc:  # Twilio refused: the caller is still with their AI
            log.warning("twilio warm transfer: the caller could not be moved", extra=fields(
                call=self.caller_sid, handoff=self.handoff.id, error=str(exc)))
            self.call.say(NO_ONE["carry_on"])
            return "failed"
        self.moved = True
        joined = await self._wait(lambda e: e.get("StatusCallbackEvent") == "participant-join"
                                  and e.get("CallSid") == self.caller_sid, JOIN_TIMEOUT_S)
        if joined is None:
            log.warning("twilio warm transfer: the caller never joined the conference",
                        extra=fields(call=self.caller_sid, handoff=self.handoff.id))
            await self._back_to_ai()
            return "failed"
        self.conference_sid = joined.get("ConferenceSid") or self.conference
        await self._participant(self.caller_sid, "hold", hold=True, hold_url=self.twilio.hold_url)
        for target in self.targets:
            if any(self._caller_left(e) for e in self.events):
                return "caller_gone"
            result, detail, human = await self._try(target)
            self.service.attempt(self.handoff, target.target, result, detail, briefing_ms=self._briefing_ms)
            log.info("twilio warm transfer attempt",
                     extra=fields(call=self.caller_sid, handoff=self.handoff.id, target=target.target,
                                  result=result, detail=detail))
            if result == "accepted" and human is not None:
                await self._bridge(human, target)
                return "accepted"
            if result == "caller_gone":
                return result
        await self._back_to_ai()
        return "no_one"

    _briefing_ms: float | None = None

    async def _try(self, target: Target) -> tuple[str, str, str | None]:
        self._briefing_ms = None
        address = self.call.profile.resolve_target(target.target) if self.call.profile else None
        if not address:
            return "failed", f"unknown target {target.target!r}", None
        to = address
        if address.startswith("sip"):
            to = _uri_with_headers(address, self.service.headers(self.handoff, self.policy, target))
        from_ = self.twilio.caller_id or self.control.caller_id or "+10000000000"
        rest = self.control.rest
        ring_s = max(5, int(target.timeout_s))  # Twilio's Timeout is 5..600 s
        self.handoff.state = "ringing"
        mark = len(self.events)
        try:
            created = await self.control.request(
                lambda: rest.conferences(self.conference_sid).participants.create_async(
                    from_=from_, to=to, label="human", timeout=ring_s,
                    status_callback=self.events_url, status_callback_method="POST",
                    status_callback_event=PARTICIPANT_EVENTS, start_conference_on_enter=True,
                    end_conference_on_exit=False, beep="false", early_media=False),
                "add_participant")
        except CallControlError as exc:
            return "failed", str(exc), None
        human = created.call_sid

        def final(e: dict[str, str]) -> bool:
            return (e.get("CallSid") == human and e.get("CallStatus") in RESULT_OF_STATUS) or \
                self._caller_left(e)

        def answer(e: dict[str, str]) -> bool:
            return (e.get("CallSid") == human and e.get("CallStatus") == "in-progress") or final(e)

        answered = await self._wait(answer, target.timeout_s + 15, mark)
        if answered is None:
            await self._hangup(human)
            return "no_answer", "no status from Twilio", None
        if self._caller_left(answered):
            await self._hangup(human)
            return "caller_gone", "the caller hung up", None
        if answered.get("CallStatus") != "in-progress":
            status = answered.get("CallStatus", "")
            return RESULT_OF_STATUS.get(status, "failed"), status, None
        self.handoff.state = "briefing"
        self._briefing_ms = round((self._clock() - self.started) * 1000.0, 1)
        try:
            await self._add_coach(human)
        except CallControlError as exc:
            await self._hangup(human)
            return "failed", f"coach: {exc}", None
        return await self._decide(human, final, mark)

    async def _add_coach(self, human: str) -> None:
        rest = self.control.rest
        self._decision = asyncio.Queue()  # nothing said to an earlier target's coach counts here
        self.coach_wanted = True
        to = _uri_with_headers(self.twilio.coach_to, {"X-AI-Handoff-Id": self.handoff.id,
                                                      "X-AI-Coach-Token": self.coach_token})
        from_ = self.twilio.caller_id or self.control.caller_id or "+10000000000"
        created = await self.control.request(
            lambda: rest.conferences(self.conference_sid).participants.create_async(
                from_=from_, to=to, label="ai-coach", coaching=True, call_sid_to_coach=human,
                start_conference_on_enter=False, end_conference_on_exit=False, beep="false",
                status_callback=self.events_url, status_callback_method="POST",
                status_callback_event=["completed"]),
            "add_coach")
        self.coach_participant = created.call_sid

    async def _decide(self, human: str, final: Callable[[dict[str, str]], bool],
                      mark: int) -> tuple[str, str, str | None]:
        decision = asyncio.ensure_future(self._decision.get())
        ended = asyncio.ensure_future(self._wait(final, self.policy.accept_timeout_s, mark))
        try:
            done, _ = await asyncio.wait({decision, ended}, timeout=self.policy.accept_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (decision, ended):
                if not t.done():
                    t.cancel()
        if decision in done:
            if decision.result():
                return "accepted", "", human
            await self._end_legs(human)
            return "declined", "said no", None
        e = ended.result() if ended in done else None
        await self._end_legs(human)
        if e is None:
            return "no_answer", "no decision", None
        if self._caller_left(e):
            return "caller_gone", "the caller hung up", None
        return "declined", f"hung up ({e.get('CallStatus')})", None

    async def _bridge(self, human: str, target: Target) -> None:
        """The caller joins the human; the coach, heard by both for once, introduces them."""
        self.handoff.state = "accepted"
        await self._participant(self.caller_sid, "unhold", hold=False)
        await self._participant(human, "end_on_exit", end_conference_on_exit=True)
        coach = self.coach_participant
        if coach is None:
            return
        session = self.service.sessions(self.coach_sid) if self.coach_sid else None
        if session is not None and await self._participant(coach, "coach_off", coaching=False):
            name = target.target.replace("_", " ").replace("-", " ")
            await session.say_and_wait(INTRODUCE.format(name=f"a colleague from {name}"))
        else:
            log.warning("twilio warm transfer: no introduction (the coach's stream is gone or Twilio "
                        "refused the change)", extra=fields(handoff=self.handoff.id))
        if not self.policy.coach:
            await self._hangup(coach)
            self.coach_participant = None
        elif not await self._participant(coach, "coach_on", coaching=True, call_sid_to_coach=human):
            await self._hangup(coach)  # a coach everyone hears is no coach: it leaves
            self.coach_participant = None

    async def _back_to_ai(self) -> None:
        """Nobody took the call: the caller comes back to an AI session (or hears goodbye)."""
        rest = self.control.rest
        what = self.policy.on_no_answer
        if what == "hangup":
            response = VoiceResponse()
            response.say(NO_ONE[what])
            response.hangup()
            twiml = str(response)
        else:
            meta = self.call.meta
            _RETURNING.put(self.handoff.id, self.caller_sid, NO_ONE[what])
            twiml = stream_twiml(self.stream_url, {
                "profile": self.call.profile.name if self.call.profile else "", "caller": meta.caller,
                "called": meta.callee, "callSid": self.caller_sid, "hops": str(self.handoff.hops),
                "handoff_return": self.handoff.id})
        with contextlib.suppress(CallControlError):
            await self.control.request(lambda: rest.calls(self.caller_sid).update_async(twiml=twiml),
                                       "back_to_ai")

    # ------------------------------------------------------------------ REST helpers
    async def _participant(self, call_sid: str, verb: str, **changes: Any) -> bool:
        """Update Participant; False when Twilio refused (logged by TwilioControl)."""
        rest = self.control.rest
        changes = {k: v for k, v in changes.items() if v is not None}
        try:
            await self.control.request(
                lambda: rest.conferences(self.conference_sid).participants(call_sid).update_async(**changes),
                verb)
        except CallControlError:
            return False
        return True

    async def _hangup(self, call_sid: str) -> None:
        rest = self.control.rest
        with contextlib.suppress(CallControlError):
            await self.control.request(lambda: rest.calls(call_sid).update_async(status="completed"),
                                       "hangup")

    async def _end_legs(self, human: str) -> None:
        self.coach_wanted = False
        if self.coach_sid is not None:
            self.service.decision_done(self.coach_sid)
        await self._hangup(human)
        if self.coach_participant:
            await self._hangup(self.coach_participant)
            self.coach_participant = None


def coach_twiml(params: dict[str, str], stream_url: str) -> str | None:
    """The voice webhook's answer for a coach leg (a signed request with a coach token), else None (an
    ordinary call, also one handed on from elsewhere with X-AI-* headers). A coach token for a handoff
    that is not waiting for its coach, or the wrong token, is rejected."""
    handoff_id = params.get("SipHeader_X-AI-Handoff-Id", "")
    if "SipHeader_X-AI-Coach-Token" not in params:
        return None
    t = _ACTIVE.get(handoff_id)
    call_sid = params.get("CallSid", "")
    if t is None or not t.coach_leg(call_sid, params.get("SipHeader_X-AI-Coach-Token", "")):
        log.warning("coach leg refused: no transfer waiting for it", extra=fields(call=call_sid,
                                                                                  handoff=pii(handoff_id)))
        response = VoiceResponse()
        response.reject()
        return str(response)
    return stream_twiml(stream_url, {"profile": BRIEFING_PROFILE, "caller": "ai-briefing",
                                     "called": "ai-briefing", "callSid": call_sid, "handoff_id": handoff_id})


def start_twilio_warm_transfer(call: Any, control: Any, policy: HandoffPolicy, handoff: Handoff,
                               targets: list[Target]) -> str | None:
    """Start it in the background; an error text when this call cannot have one."""
    from gateway.handoff.service import current

    if policy.twilio is None:
        return "the profile has no handoff.twilio block"
    public = getattr(call.settings, "twilio_public_url", None)
    if not public:
        return "GATEWAY_TWILIO_PUBLIC_URL is not set (Twilio's callbacks need it)"
    service = current()
    if not service.claim(call.uuid):
        return "a warm transfer is already running for this call"
    transfer = TwilioWarmTransfer(call, control, policy, handoff, targets, service, public)

    async def run() -> None:
        try:
            await transfer.run()
        except Exception:  # one bad transfer must not take anything else with it
            log.exception("twilio warm transfer failed", extra=fields(call=call.uuid, handoff=handoff.id))
            if transfer.moved:  # never while the caller is still on their own stream
                with contextlib.suppress(Exception):
                    await transfer._back_to_ai()
            else:
                call.say(NO_ONE["carry_on"])
        finally:
            service.release(call.uuid)

    service.keep(asyncio.get_running_loop().create_task(run()))
    return None
