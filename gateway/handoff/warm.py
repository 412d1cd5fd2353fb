"""Warm transfer on FreeSWITCH: the caller stays with the AI while a human is dialled; the human hears a
private briefing and accepts with a key; then the AI introduces the human and the two are bridged.

Shape (chosen on the real FreeSWITCH 1.10.12, see docs/handoff.md):

    caller C: parked, streamed to the gateway, talking to the AI the whole time
    human  H: originate {origination_uuid=H, sip_h_X-AI-*...}sofia/gateway/kamailio-edge/<number>
              ai-briefing XML ai-gateway           (out through the edge, like every transfer)
              -> on answer H runs the worker's ai-briefing extension, which streams H to the gateway
                 with the handoff id in the metadata: an AI session on H's own leg speaks the briefing
                 (gateway/handoff/briefing.py), so only the human hears it and it works wherever the
                 worker and the gateway run
              -> the human presses 1 (accept) or 2 (decline); DTMF events of H over ESL
    accept:   the caller's AI says a short introduction, then uuid_audio_stream C stop,
              uuid_audio_stream H stop (unless the profile keeps the AI as H's whisper coach),
              uuid_bridge C H
    decline / busy / no answer / failure: the caller's AI is told, and says what happens next; the next
              target is tried; after the last one the profile's on_no_answer applies.

Why not a conference per call: a conference needs the caller moved out of park (its stream stops, so
the AI is gone while the human rings) or a second AI leg for the caller, and a member-to-member relate
for the briefing; two plain legs and one bridge keep the caller with the same AI session until the human
has accepted, and the human's leg is an ordinary call of the worker.

Every verb maps to one documented FreeSWITCH command (mod_commands: originate, uuid_bridge, uuid_kill,
uuid_audio_stream stop; https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_commands_1966741/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from gateway.esl import commands
from gateway.esl.errors import EslCommandError, EslError
from gateway.esl.protocol import Event
from gateway.handoff.record import Handoff
from gateway.handoff.routing import HandoffPolicy, Target
from gateway.log import fields, pii

log = logging.getLogger("gateway.handoff")

BRIEFING_EXTENSION = ("ai-briefing", "XML", "ai-gateway")  # freeswitch-conf/dialplan/gateway.xml
NUMBER = re.compile(r"[+0-9*#]{1,32}")
SIP_URI = re.compile(r"sips?:[^\s;,'\"\\{}]{3,200}")
# Hangup causes of the human's leg (Q.850 names as FreeSWITCH spells them) -> what the caller is told.
RESULT_OF_CAUSE = {
    "USER_BUSY": "busy",
    "NO_ANSWER": "no_answer",
    "NO_USER_RESPONSE": "no_answer",
    "ALLOTTED_TIMEOUT": "no_answer",
    "ORIGINATOR_CANCEL": "no_answer",
    "PROGRESS_TIMEOUT": "no_answer",
    "CALL_REJECTED": "declined",
    "USER_NOT_REGISTERED": "failed",
}
# What the caller's AI says, verbatim (both model backends follow the "Say exactly" contract), so an
# operator knows what callers hear.
HOLD = "Please hold on, I am getting a colleague for you."
TRY_NEXT = "I'm sorry, that colleague is not available. Let me try someone else, please stay on the line."
INTRODUCE = "I have {name} on the line for you now. Connecting you."
NO_ONE = {
    "carry_on": "I'm sorry, no one is available right now. I can keep helping you myself.",
    "take_message": ("I'm sorry, no one is available right now. I can take a message: please tell me your "
                     "name, your number and your message, and someone will call you back."),
    "hangup": "I'm sorry, no one is available right now. Someone will call you back. Goodbye.",
}


def _value(text: str) -> str:
    """A value for the originate `{...}` variable list: quoted (spaces kept), no quote, brace,
    backslash or line break (refused by header_text already), commas (the list separator) as ';'."""
    if any(c in text for c in "'{}\\\r\n"):
        raise ValueError(f"unsafe originate variable value: {text[:40]!r}")
    return "'" + text.replace(",", ";") + "'" if (" " in text or "," in text) else text


def originate_command(h_uuid: str, dial: str, variables: dict[str, str], timeout_s: float) -> str:
    commands.uuid(h_uuid)
    pairs = ",".join(f"{k}={_value(v)}" for k, v in {"origination_uuid": h_uuid, **variables}.items())
    exten, dialplan, context = BRIEFING_EXTENSION
    return f"originate {{{pairs}}}{dial} {exten} {dialplan} {context} AI 0000000000 {int(timeout_s)}"


class _Leg:
    """Events of one channel: answered, DTMF digits, hung up (with its cause)."""

    def __init__(self, client: Any, uuid: str, clock: Callable[[], float]) -> None:
        self.uuid = uuid
        self.answered_at: float | None = None
        self.cause: str | None = None
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self._clock = clock
        self._sub = client.subscribe(self._on_event, uuid)

    def _on_event(self, event: Event) -> None:
        if event.name == "CHANNEL_ANSWER" and self.answered_at is None:
            self.answered_at = self._clock()
            self.answered.set()
        elif event.name == "DTMF":
            digit = event.get("DTMF-Digit")
            if digit:
                self.digits.put_nowait(digit)
        elif event.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE") and self.cause is None:
            self.cause = event.get("Hangup-Cause") or "NORMAL_CLEARING"
            self.ended.set()
            self.digits.put_nowait("")  # wakes a waiter

    def close(self) -> None:
        self._sub.cancel()


class WarmTransfer:
    """One warm transfer of one call (the caller's CallSession and its FreeSWITCH CallControl)."""

    def __init__(self, call: Any, control: Any, policy: HandoffPolicy, handoff: Handoff,
                 targets: list[Target], service: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.call, self.control, self.policy, self.handoff = call, control, policy, handoff
        self.targets, self.service, self._clock = targets, service, clock
        self.client = control.esl
        self.started = clock()
        self.result: str | None = None
        self._edge: str | None = None

    # ------------------------------------------------------------------ the whole transfer
    async def run(self) -> str:
        caller = _Leg(self.client, self.control.uuid, self._clock)
        try:
            await self._hold(True)
            for i, target in enumerate(self.targets):
                if caller.ended.is_set():
                    self.result = "caller_gone"
                    break
                result, detail, h_uuid = await self._try(target, caller)
                self.service.attempt(self.handoff, target.target, result, detail,
                                     briefing_ms=self._briefing_ms)
                log.info("warm transfer attempt",
                         extra=fields(call=self.control.uuid, handoff=self.handoff.id, target=target.target,
                                      result=result, detail=detail))
                if result == "accepted" and h_uuid is not None:
                    await self._bridge(target, h_uuid)
                    self.result = "accepted"
                    return self.result
                if result == "caller_gone":
                    self.result = result
                    break
                if i + 1 < len(self.targets):
                    if self.policy.hold_audio:
                        await self._hold(False)
                        await self.call.say_and_wait(TRY_NEXT)
                        await self._hold(True, announce=False)
                    else:
                        self.call.say(TRY_NEXT)
            else:
                self.result = "no_one"
                await self._hold(False)
                self._no_one()
            return self.result or "no_one"
        finally:
            caller.close()
            if self._holding:  # the caller gone, or an error: no hold audio left behind
                await self._hold(False)
            self.handoff.state = {"accepted": "accepted"}.get(self.result or "", "failed")

    _briefing_ms: float | None = None
    _holding = False

    async def _hold(self, on: bool, announce: bool = True) -> None:
        """The profile's hold audio to the caller (uuid_broadcast on its parked channel) while the human
        is dialled and briefed; stopped (uuid_break all) before the AI speaks to the caller again.
        While it plays the caller's AI is on hold too (CallSession.hold): what the caller says gets no
        answer over the hold audio. Without hold_audio, or when it cannot be started, the caller stays
        with the AI and talks to it as before."""
        audio = self.policy.hold_audio
        if not audio or on == self._holding:
            return
        c = self.control.uuid
        try:
            if on:
                if announce:
                    await self.call.say_and_wait(HOLD)
                await self.client.api(commands.uuid_broadcast(c, audio, "aleg"))
                self.call.hold(True)
            else:
                self._holding = False
                self.call.hold(False)  # the AI speaks next, whatever uuid_break answers
                await self.client.api(commands.uuid_break(c, True))
            self._holding = on
        except (EslError, ValueError) as exc:  # no hold audio is no reason to drop the transfer
            log.warning("hold audio", extra=fields(call=c, handoff=self.handoff.id, on=on, error=str(exc)))

    async def _try(self, target: Target, caller: _Leg) -> tuple[str, str, str | None]:
        self._briefing_ms = None
        address = self.call.profile.resolve_target(target.target)
        try:
            dial, extra = await self._dial(address or "")
        except ValueError as exc:
            return "failed", str(exc), None
        h_uuid = str(uuidlib.uuid4())
        headers = self.service.headers(self.handoff, self.policy, target)
        variables = {"originate_timeout": str(int(target.timeout_s)), "ai_handoff_id": self.handoff.id,
                     "ai_parent_uuid": self.control.uuid, "ignore_early_media": "true",
                     "origination_caller_id_number": "0000000000", "origination_caller_id_name": "AI handoff",
                     **extra, **{f"sip_h_{k}": v for k, v in headers.items()}}
        human = _Leg(self.client, h_uuid, self._clock)
        self.handoff.state = "ringing"
        try:
            try:
                command = originate_command(h_uuid, dial, variables, target.timeout_s)
            except (ValueError, EslError) as exc:
                return "failed", str(exc), None
            dialled = asyncio.ensure_future(self.client.bgapi(command, timeout=target.timeout_s + 15))
            gone = asyncio.ensure_future(caller.ended.wait())
            try:
                await asyncio.wait({dialled, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not dialled.done():  # the caller hung up while the human rang
                await self._kill(h_uuid, "ORIGINATOR_CANCEL")
                dialled.cancel()
                return "caller_gone", "the caller hung up", None
            try:
                dialled.result()
            except EslCommandError as exc:
                cause = _cause(exc.reply or str(exc))
                return RESULT_OF_CAUSE.get(cause, "failed"), cause, None
            except EslError as exc:
                await self._kill(h_uuid, "NORMAL_CLEARING")
                return "failed", str(exc), None
            # Answered: H now runs ai-briefing, which streams it to the gateway and speaks the briefing.
            self.handoff.state = "briefing"
            answered = human.answered_at or self._clock()
            self._briefing_ms = round((answered - self.started) * 1000.0, 1)
            return await self._await_decision(human, caller, h_uuid)
        finally:
            human.close()

    async def _await_decision(self, human: _Leg, caller: _Leg, h_uuid: str) -> tuple[str, str, str | None]:
        accept, decline = self.policy.accept_digit, self.policy.decline_digit
        # A spoken yes/no reaches us through the briefing agent's accept_handoff/decline_handoff tools.
        self.service.await_decision(h_uuid, lambda yes: human.digits.put_nowait(accept if yes else decline))
        try:
            return await self._decision(human, caller, h_uuid, accept, decline)
        finally:
            self.service.decision_done(h_uuid)

    async def _decision(self, human: _Leg, caller: _Leg, h_uuid: str, accept: str,
                        decline: str) -> tuple[str, str, str | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.accept_timeout_s
        while True:
            if caller.ended.is_set():
                await self._kill(h_uuid, "ORIGINATOR_CANCEL")
                return "caller_gone", "the caller hung up", None
            if human.ended.is_set():
                return "declined", f"hung up ({human.cause})", None
            left = deadline - loop.time()
            if left <= 0:
                await self._kill(h_uuid, "NO_USER_RESPONSE")
                return "no_answer", "no key pressed", None
            digit_task = asyncio.ensure_future(human.digits.get())
            gone = asyncio.ensure_future(caller.ended.wait())
            done, _ = await asyncio.wait({digit_task, gone}, timeout=left,
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in (digit_task, gone):
                if t not in done:
                    t.cancel()
            if digit_task in done:
                digit = digit_task.result()
                if digit == accept:
                    return "accepted", "", h_uuid
                if digit == decline:
                    await self._kill(h_uuid, "CALL_REJECTED")
                    return "declined", f"pressed {decline}", None

    async def _bridge(self, target: Target, h_uuid: str) -> None:
        """The caller hears a short introduction from their AI, then is bridged to the human."""
        self.handoff.state = "accepted"

        async def act() -> None:
            self.control.moving()  # the caller's stream closes now on purpose
            with contextlib.suppress(EslCommandError):
                await self.client.api(commands.uuid_audio_stream_stop(self.control.uuid))
            if not self.policy.coach:
                with contextlib.suppress(EslCommandError):
                    await self.client.api(commands.uuid_audio_stream_stop(h_uuid))
            await self.client.api(f"uuid_bridge {commands.uuid(self.control.uuid)} {commands.uuid(h_uuid)}")

        name = target.target.replace("_", " ").replace("-", " ")
        await self._hold(False)
        await self.call.speak_then(INTRODUCE.format(name=f"a colleague from {name}"), act, "warm_transferred")
        if self.policy.coach:
            self.service.keep(asyncio.get_running_loop().create_task(self._coach(h_uuid)))
        if self.policy.notes:
            self.service.keep(asyncio.get_running_loop().create_task(self._notes()))

    async def _notes(self) -> None:
        """A listen-only AI on the bridged call: the worker streams both directions of the caller's
        channel (mixed) to the gateway under the `notes` profile (listen_only: its audio is dropped, it
        has no call control); what it transcribes is copied, redacted, into the handoff while it lives."""
        c = self.control.uuid
        notes_id = f"notes-{c}"
        metadata = (f'{{"caller":"ai-notes","callee":"ai-notes","call_id":"{notes_id}","worker":'
                    f'"{self.control.worker_id}","profile":"notes","handoff_id":"{self.handoff.id}","rate":8000}}')
        for _ in range(200):  # the caller's own session ends first (one live stream per channel)
            if self.service.sessions(c) is None:
                break
            await asyncio.sleep(0.05)
        try:
            conf_dir = (await self.client.api("global_getvar conf_dir")).strip()
            if not re.fullmatch(r"[A-Za-z0-9_./-]{1,300}", conf_dir):
                raise ValueError("the worker's conf_dir is not a plain path")
            # JSON needs double quotes, which commands.uuid_setvar refuses for values from outside; this
            # one is built here from checked parts (uuid, worker id, handoff id: no spaces, no ' or \),
            # and passes FreeSWITCH's argument splitter the way the dialplan's metadata passes
            # uuid_audio_stream.
            if not re.fullmatch(r"[-{}\":,._A-Za-z0-9]{1,400}", metadata):
                raise ValueError("note-taker metadata with unexpected characters")
            await self.client.api(f"uuid_setvar {commands.uuid(c)} ai_stream_metadata {metadata}")
            await self.client.api(commands.uuid_setvar(c, "ai_stream_mix", "mixed"))
            await self.client.api(commands.uuid_setvar(c, "ai_stream_rate", "8k"))
            await self.client.bgapi(f"lua {conf_dir}/scripts/ai_stream_start.lua {c}", timeout=15)
        except (EslError, ValueError) as exc:
            log.warning("note-taker not started", extra=fields(handoff=self.handoff.id, error=str(exc)))
            return
        caller = _Leg(self.client, c, self._clock)
        redactor = self.call.redactor
        try:
            while not caller.ended.is_set():
                session = self.service.sessions(c)  # the stream's key is the channel's uuid
                if session is not None and getattr(session.profile, "listen_only", False):
                    # What it heard (both sides, mixed); its own replies are never played nor kept.
                    self.handoff.notes = [{"role": "call", "text": redactor.text(t["text"])}
                                          for t in session.transcript if t["role"] == "caller" and t["text"]]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(caller.ended.wait(), 1.0)
        finally:
            caller.close()

    async def _coach(self, h_uuid: str) -> None:
        """The briefing AI stays on the human's leg: it hears only the human (the leg's stream is mono:
        what the human says) and only the human hears it. The human presses coach_repeat_digit to hear
        the summary again, coach_leave_digit to send the coach away; it also ends when the human hangs up."""
        human = _Leg(self.client, h_uuid, self._clock)
        repeat, leave = self.policy.coach_repeat_digit, self.policy.coach_leave_digit
        try:
            while True:
                digit = await human.digits.get()
                if human.ended.is_set() or digit == "":
                    log.info("coach left: the human hung up", extra=fields(handoff=self.handoff.id))
                    return
                session = self.service.sessions(h_uuid)
                if digit == repeat and session is not None:
                    session.say(f"Here is the summary again. {self.handoff.summary.text}")
                elif digit == leave:
                    with contextlib.suppress(EslError):
                        await self.client.api(commands.uuid_audio_stream_stop(h_uuid))
                    log.info("coach left on request", extra=fields(handoff=self.handoff.id))
                    return
        finally:
            human.close()

    def _no_one(self) -> None:
        what = self.policy.on_no_answer
        if what == "hangup":
            self.service.keep(asyncio.get_running_loop().create_task(
                self.call.speak_then(NO_ONE[what], self.control.hangup, "completed")))
        else:
            self.call.say(NO_ONE[what])

    # ------------------------------------------------------------------ helpers
    async def _dial(self, address: str) -> tuple[str, dict[str, str]]:
        """The dial string to the target through the edge, as the dialplan's ai-transfer routes do."""
        if NUMBER.fullmatch(address):
            return f"sofia/gateway/kamailio-edge/{address}", {}
        if SIP_URI.fullmatch(address):
            if self._edge is None:
                self._edge = (await self.client.api("global_getvar kamailio_edge")).strip()
            if not re.fullmatch(r"[A-Za-z0-9.:-]{3,100}", self._edge or ""):
                raise ValueError("the worker has no usable kamailio_edge")
            return f"sofia/kamailio/{address}", {"sip_route_uri": f"sip:{self._edge};lr"}
        raise ValueError(f"not a number or sip: URI: {pii(address)}")

    async def _kill(self, uuid: str, cause: str) -> None:
        with contextlib.suppress(EslError):
            await self.client.api(commands.uuid_kill(uuid, cause))


def _cause(reply: str) -> str:
    """`-ERR USER_BUSY` -> USER_BUSY."""
    m = re.search(r"([A-Z][A-Z_]{3,})", reply)
    return m.group(1) if m else "UNKNOWN"


def start_warm_transfer(call: Any, policy: HandoffPolicy, handoff: Handoff,
                        targets: list[Target]) -> str | None:
    """Start the warm transfer in the background; an error text when this call cannot have one (no
    FreeSWITCH call control, e.g. a Twilio call) or one is already running."""
    from gateway.handoff.service import current

    control = getattr(call, "control", None)
    if control is not None and getattr(control, "rest", None) is not None:  # a Twilio Media Streams call
        from gateway.handoff.twilio_warm import start_twilio_warm_transfer

        return start_twilio_warm_transfer(call, control, policy, handoff, targets)
    esl = getattr(control, "esl", None) if control is not None else None
    if esl is None:
        return "warm transfer needs FreeSWITCH call control"
    service = current()
    if not service.claim(call.uuid):
        return "a warm transfer is already running for this call"
    transfer = WarmTransfer(call, control, policy, handoff, targets, service)

    async def run() -> None:
        try:
            await transfer.run()
        except Exception:  # one bad transfer must not take anything else with it
            log.exception("warm transfer failed", extra=fields(call=call.uuid, handoff=handoff.id))
            call.say(NO_ONE["carry_on"])
        finally:
            service.release(call.uuid)

    service.keep(asyncio.get_running_loop().create_task(run()))
    return None
