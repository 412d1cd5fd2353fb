"""Call control over ESL: one `CallControl` per call, one `ControlPlane` (EslClient per worker) per process.

Every verb maps 1:1 to documented FreeSWITCH commands (mod_commands,
https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_commands_1966741/, and
mod_conference's API) and turns a `-ERR` into `CallControlError` carrying FreeSWITCH's own text and a
`kind` (the admin API maps kinds to HTTP statuses; nothing here knows HTTP). The commands and the dialplan
extensions they rely on (freeswitch-conf/dialplan/gateway.xml) are:

    hangup(cause)            uuid_kill <uuid> <cause>
    transfer("2001")         uuid_transfer <uuid> 2001 XML ai-transfer      (bridged out via the edge)
    transfer("sip:u@h")      uuid_setvar <uuid> ai_transfer_uri sip:u@h
                             uuid_transfer <uuid> ai-transfer-uri XML ai-transfer
    transfer("refer:sip:..") uuid_deflect <uuid> sip:...                    (SIP REFER to the carrier)
    escalate(...)            uuid_setvar <uuid> sip_h_X-AI-Reason|-Urgency|-Summary <text>; transfer
    add_participant(target)  uuid_setvar <uuid> ai_conference ai-<uuid>
                             uuid_transfer <uuid> ai-conference XML ai-transfer (caller joins; stream stops)
                             conference ai-<uuid> bgdial {origination_uuid=H}loopback/<target>/ai-transfer ...
                             conference ai-<uuid> bgdial {origination_uuid=C..}loopback/ai-coach/ai-gateway ..
                             conference ai-<uuid> relate <coach member> <caller member> nospeak
    kick(member)             conference ai-<uuid> kick <member>
    play(path)               uuid_broadcast <uuid> <path> aleg              (queued in order by FreeSWITCH)
    flush_playback()         uuid_break <uuid> all
    start/stop_recording     uuid_record <uuid> start|stop <path>

File mode (upstream MIT mod_audio_stream): every `streamAudio` message the gateway sends comes back as
a `mod_audio_stream::play` event naming a temp file; `CallControl` hands each path to `on_play_file`
(the call's playback driver, gateway/call/playback.py), which plays them in order with `play()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid as uuidlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gateway.esl import commands
from gateway.esl.client import EslClient, Subscription, parse_address
from gateway.esl.errors import (
    EslArgumentError,
    EslCommandError,
    EslConnectionError,
    EslError,
    EslTimeout,
)
from gateway.esl.protocol import Event
from gateway.log import fields, pii

log = logging.getLogger("gateway.control")


class ErrorKind(Enum):
    INVALID = "invalid"  # a target or argument the switch could never accept; refused before sending
    REFUSED = "refused"  # the switch (or a dialled leg) said no; `reply` holds its own text
    CONFLICT = "conflict"  # the verb does not apply in the call's state (kick outside a conference)
    UNREACHABLE = "unreachable"  # the worker / REST API cannot be reached
    TIMEOUT = "timeout"  # no answer in time
    UNAVAILABLE = "unavailable"  # this call has no call control at all
    FORBIDDEN = "forbidden"  # the transfer policy does not allow the target (gateway/call/policy.py)


class CallControlError(Exception):
    """A call-control verb failed. `str()` is a message fit for an operator or for the model to speak."""

    def __init__(self, message: str, *, kind: ErrorKind = ErrorKind.REFUSED, command: str | None = None,
                 reply: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.command = command
        self.reply = reply


@dataclass(frozen=True)
class ControlSettings:
    """Names shared with freeswitch-conf/dialplan/gateway.xml (change both together)."""

    transfer_context: str = "ai-transfer"
    transfer_uri_extension: str = "ai-transfer-uri"
    conference_extension: str = "ai-conference"
    conference_prefix: str = "ai-"
    # Extensions the ai-transfer context routes (its ai-transfer-number pattern). Anything else would
    # find no extension and FreeSWITCH would drop the caller, so it is refused before uuid_transfer.
    extension_pattern: str = r"[+0-9*#]{1,32}"
    coach_dial: str = "loopback/ai-coach/ai-gateway"
    coach_caller_id_name: str = "AI"
    caller_id_number: str = "0000000000"
    # How long add_participant waits for the caller and the coach leg to appear in the conference.
    member_join_timeout: float = 10.0
    member_poll_interval: float = 0.2
    # How long add_participant waits for the human to answer, and how long after joining a failure of
    # the human's leg (e.g. INCOMPATIBLE_DESTINATION right after answer) still counts as a failed add.
    participant_answer_timeout: float = 45.0
    participant_settle_s: float = 1.0
    # Escalation headers travel in one INVITE over UDP: keep them well under a fragment.
    max_reason_chars: int = 200
    max_summary_chars: int = 600


# What the ai-transfer-uri extension accepts (freeswitch-conf/dialplan/gateway.xml): no parameters, no
# spaces, nothing FreeSWITCH's argument splitter or the dial-string variable list would interpret.
_SIP_URI = re.compile(r"sips?:[^\s;,'\"\\{}]{3,200}")
_HEADER_TEXT_DROP = re.compile(r"[\x00-\x1f\x7f'\"\\]+")


def header_text(text: str, limit: int) -> str:
    """Text fit for a SIP header value passed through uuid_setvar: no control characters (a CR/LF would
    end the header), no quotes or backslashes (FreeSWITCH's argument splitter consumes them), single
    spaces, bounded length."""
    cleaned = " ".join(_HEADER_TEXT_DROP.sub(" ", text).split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 3].rstrip() + "..."
    return cleaned


def _conference_member(list_body: str, unique_id: str) -> str | None:
    """Member id of `unique_id` in `conference <name> list` output (id;name;uuid;...)."""
    for line in list_body.splitlines():
        fields = line.split(";")
        if len(fields) >= 3 and fields[2] == unique_id:
            return fields[0]
    return None


class _LegWatch:
    """Watches one leg the gateway dialled; `cause` is set when FreeSWITCH reports it hung up."""

    def __init__(self, client: EslClient, uuid: str) -> None:
        self.uuid = uuid
        self.cause: str | None = None
        self._ended = asyncio.Event()
        self._sub: Subscription | None = client.subscribe(self._on_event, uuid)

    def _on_event(self, event: Event) -> None:
        if event.name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE") and self.cause is None:
            self.cause = event.get("Hangup-Cause") or "hung up"
            self._ended.set()

    async def wait(self, seconds: float) -> None:
        """Sleep `seconds`, waking early if the leg hangs up."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), seconds)

    def cancel(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None


class CallControl:
    """Control verbs of one call on one FreeSWITCH worker."""

    def __init__(self, uuid: str, client: EslClient, *, worker_id: str,
                 on_dtmf: Callable[[str], None] | None = None, settings: ControlSettings | None = None,
                 on_release: Callable[[CallControl], None] | None = None,
                 on_move: Callable[[str], None] | None = None) -> None:
        commands.uuid(uuid)  # refuse a malformed uuid before it can reach a command line
        self.uuid = uuid
        self.worker_id = worker_id
        self.settings = settings or ControlSettings()
        self._client = client
        self.on_dtmf = on_dtmf
        self.on_play_file: Callable[[str], None] | None = None  # file mode: set by the call's playback
        self._on_release = on_release
        self._on_move = on_move
        self._subscription: Subscription | None = client.subscribe(self._on_event, uuid)
        self._play_lock = asyncio.Lock()  # one broadcast or break on the wire at a time, in order
        self.conference: str | None = None
        self.coach_uuid: str | None = None
        self.released = False
        self.hangup_cause: str | None = None
        self.files_played = 0

    @property
    def esl(self) -> EslClient:
        """The worker's ESL connection, for verbs built outside this module (gateway/handoff/warm.py)."""
        return self._client

    def moving(self) -> None:
        """Public form of `_moving` (the gateway is about to take the call out of park)."""
        self._moving()

    # ------------------------------------------------------------------ verbs

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        await self._api(commands.uuid_kill, self.uuid, cause)

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        """Blind transfer: dialplan extension/number, `sip:`/`sips:` URI, or `refer:<uri>` (SIP REFER)."""
        target = target.strip()
        if not target:
            raise CallControlError("empty transfer target", kind=ErrorKind.INVALID)
        for name, value in (headers or {}).items():
            await self._api(commands.uuid_setvar, self.uuid, self._header_var(name), value)
        self._moving()
        if target.startswith("refer:"):
            await self._api(commands.uuid_deflect, self.uuid, target[len("refer:"):])
        elif target.startswith(("sip:", "sips:")):
            if not _SIP_URI.fullmatch(target):
                raise CallControlError(
                    f"transfer target must be a plain sip:user@host URI: {target!r}", kind=ErrorKind.INVALID)
            await self._api(commands.uuid_setvar, self.uuid, "ai_transfer_uri", target)
            await self._api(commands.uuid_transfer, self.uuid, self.settings.transfer_uri_extension, "XML",
                            self.settings.transfer_context)
        else:
            self._check_extension(target)
            await self._api(commands.uuid_transfer, self.uuid, target, "XML", self.settings.transfer_context)
        log.info("call transferred", extra=fields(call=self.uuid, worker=self.worker_id,
                                            target=pii(target), headers=sorted(headers or {})))

    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None:
        """Transfer to a human with the model's reason and the conversation so far in SIP headers."""
        s = self.settings
        headers = {
            "X-AI-Reason": header_text(reason, s.max_reason_chars) or "unspecified",
            "X-AI-Urgency": header_text(urgency, 20) or "normal",
            "X-AI-Summary": header_text(summary, s.max_summary_chars) or "none",
        }
        await self.transfer(target, headers)

    async def add_participant(self, target: str) -> None:
        """Move the caller into a conference, dial the human in, and add the AI as a coach leg that only
        the human hears (`relate <coach> <caller> nospeak`: the caller stops hearing the coach)."""
        s = self.settings
        target = target.strip()
        name = f"{s.conference_prefix}{self.uuid}"
        human_uuid = str(uuidlib.uuid4())
        coach_uuid = str(uuidlib.uuid4())
        if target.startswith(("sip:", "sips:")):
            if not _SIP_URI.fullmatch(target):
                raise CallControlError(f"participant must be a plain sip:user@host URI: {target!r}",
                                       kind=ErrorKind.INVALID)
            human_vars = {"origination_uuid": human_uuid, "ai_transfer_uri": target,
                          "loopback_export": "ai_transfer_uri"}
            human_dial = f"loopback/{s.transfer_uri_extension}/{s.transfer_context}"
        elif target.startswith("refer:") or not target:
            raise CallControlError(f"a conference participant must be a number or SIP URI, not {target!r}",
                                   kind=ErrorKind.INVALID)
        else:
            self._check_extension(target)
            human_vars = {"origination_uuid": human_uuid}
            human_dial = f"loopback/{target}/{s.transfer_context}"
        human_leg = _LegWatch(self._client, human_uuid)
        try:
            await self._conference_with(name, target, human_dial, human_vars, coach_uuid)
            await self._confirm_participant(name, human_leg)
        finally:
            human_leg.cancel()
        log.info("participant added", extra=fields(call=self.uuid, worker=self.worker_id, target=pii(target),
                                             conference=name))

    async def _conference_with(self, name: str, target: str, human_dial: str, human_vars: dict[str, str],
                               coach_uuid: str) -> None:
        s = self.settings
        if self.conference is not None:
            # Already in the conference with its coach: just dial one more human in.
            await self._api(commands.conference_dial, name, human_dial, s.caller_id_number, "Caller",
                            human_vars)
        else:
            await self._api(commands.uuid_setvar, self.uuid, "ai_conference", name)
            self._moving()
            await self._api(commands.uuid_transfer, self.uuid, s.conference_extension, "XML",
                            s.transfer_context)
            self.conference = name
            await self._api(commands.conference_dial, name, human_dial, s.caller_id_number, "Caller",
                            human_vars)
            coach_vars = {"origination_uuid": coach_uuid, "ai_parent_uuid": self.uuid,
                          "loopback_export": "ai_parent_uuid"}
            await self._api(commands.conference_dial, name, s.coach_dial, s.caller_id_number,
                            s.coach_caller_id_name, coach_vars)
            self.coach_uuid = coach_uuid
            caller_member, coach_member = await self._wait_members(name, self.uuid, coach_uuid)
            await self._api(commands.conference_relate, name, coach_member, caller_member, "nospeak")

    async def _confirm_participant(self, name: str, leg: _LegWatch) -> None:
        """Success only once the human's leg is in the conference and still up a moment later: a
        loopback bridge whose far side fails (no common codec, busy, no route) hangs up the leg."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.participant_answer_timeout
        while True:
            if leg.cause is not None:
                raise CallControlError(f"the participant's call failed: {leg.cause}", reply=leg.cause)
            try:
                body = await self._client.api(commands.conference_list(name))
            except EslCommandError:
                body = ""
            except EslError as exc:
                raise CallControlError(f"FreeSWITCH worker {self.worker_id}: {exc}",
                                       kind=ErrorKind.UNREACHABLE) from exc
            if _conference_member(body, leg.uuid) is not None:
                break
            if loop.time() >= deadline:
                raise CallControlError(f"the participant did not answer within "
                                       f"{s.participant_answer_timeout:g} s", kind=ErrorKind.TIMEOUT)
            await leg.wait(s.member_poll_interval)
        await leg.wait(s.participant_settle_s)
        if leg.cause is not None:
            raise CallControlError(f"the participant's call failed: {leg.cause}", reply=leg.cause)

    async def kick(self, member: str) -> None:
        if self.conference is None:
            raise CallControlError("the call is not in a conference", kind=ErrorKind.CONFLICT)
        await self._api(commands.conference_kick, self.conference, member)

    async def play(self, path: str) -> None:
        async with self._play_lock:
            await self._api(commands.uuid_broadcast, self.uuid, path, "aleg")
        self.files_played += 1

    async def displace(self, path: str) -> None:
        """Play `path` to the caller at once, mixed into the channel's output (file mode, gapless)."""
        await self._api(commands.uuid_displace, self.uuid, "start", path)
        self.files_played += 1

    async def stop_displace(self, path: str) -> None:
        """Stop a displaced file early (barge-in); one that has just ended is not an error."""
        try:
            await self._client.api(commands.uuid_displace(self.uuid, "stop", path))
        except EslCommandError as exc:  # "-ERR Cannot stop displace session!": it had finished
            log.debug("displace already over", extra=fields(call=self.uuid, reply=exc.reply))
        except EslError as exc:
            raise CallControlError(f"ESL error: {exc}") from exc

    async def flush_playback(self) -> None:
        """Barge-in (file mode): stop the file playing now and those FreeSWITCH has queued."""
        async with self._play_lock:  # after an in-flight broadcast, so the break also covers it
            await self._api(commands.uuid_break, self.uuid, True)

    async def start_recording(self, path: str) -> None:
        await self._api(commands.uuid_record, self.uuid, "start", path)

    async def stop_recording(self, path: str) -> None:
        await self._api(commands.uuid_record, self.uuid, "stop", path)

    def release(self) -> None:
        """Stop receiving this call's events (idempotent); called on CHANNEL_HANGUP_COMPLETE."""
        if self.released:
            return
        self.released = True
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self.on_play_file = None
        if self._on_release is not None:
            self._on_release(self)

    # ------------------------------------------------------------------ internals

    def _moving(self) -> None:
        """The gateway is about to take the call out of park: its stream will close, and that close
        is expected, not a lost stream (ControlPlane logs only unexpected losses)."""
        if self._on_move is not None:
            self._on_move(self.uuid)

    def _check_extension(self, target: str) -> None:
        if not re.fullmatch(self.settings.extension_pattern, target):
            raise CallControlError(f"no such transfer target {target!r} (not a number or sip: URI)",
                                   kind=ErrorKind.INVALID)

    @staticmethod
    def _header_var(name: str) -> str:
        try:
            return commands.sip_header_variable(name)
        except EslArgumentError as exc:
            raise CallControlError(str(exc), kind=ErrorKind.INVALID) from None

    async def _api(self, builder: Callable[..., str], *args: object) -> str:
        try:
            command = builder(*args)
        except EslArgumentError as exc:
            raise CallControlError(f"invalid argument: {exc}", kind=ErrorKind.INVALID) from None
        try:
            return await self._client.api(command)
        except EslCommandError as exc:
            log.warning("call control refused",
                        extra=fields(call=self.uuid, worker=self.worker_id,
                               command=command.split(" ", 1)[0], reply=exc.reply))
            raise CallControlError(exc.reason, command=command, reply=exc.reply) from None
        except EslTimeout as exc:
            raise CallControlError(f"FreeSWITCH worker {self.worker_id} did not answer in time",
                                   kind=ErrorKind.TIMEOUT,
                                   command=command) from exc
        except EslConnectionError as exc:
            raise CallControlError(f"FreeSWITCH worker {self.worker_id} is unreachable",
                                   kind=ErrorKind.UNREACHABLE,
                                   command=command) from exc
        except EslError as exc:
            raise CallControlError(f"ESL error: {exc}", command=command) from exc

    async def _wait_members(self, name: str, *uuids: str) -> list[str]:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.member_join_timeout
        while True:
            try:
                body = await self._client.api(commands.conference_list(name))
            except EslCommandError:
                body = ""  # "Conference ... not found" until the first member is in
            except EslError as exc:
                raise CallControlError(f"FreeSWITCH worker {self.worker_id}: {exc}",
                                       kind=ErrorKind.UNREACHABLE) from exc
            members = [_conference_member(body, u) for u in uuids]
            if all(members):
                return [m for m in members if m]
            if loop.time() >= deadline:
                raise CallControlError(f"conference {name}: participants did not join within "
                                       f"{s.member_join_timeout:g} s", kind=ErrorKind.TIMEOUT)
            await asyncio.sleep(s.member_poll_interval)

    def _on_event(self, event: Event) -> None:
        handler = _EVENT_TABLE.get(event.subclass or event.name)
        if handler is not None:
            handler(self, event)

    def _event_dtmf(self, event: Event) -> None:
        digit = event.get("DTMF-Digit")
        if digit and self.on_dtmf is not None:
            self.on_dtmf(digit)

    def _event_play(self, event: Event) -> None:
        if self.on_play_file is None:  # stream mode: the module plays what we send itself
            return
        try:
            body = event.json_body()
            path = body["file"] if isinstance(body, dict) else None
            if not isinstance(path, str):
                raise ValueError("no file in play event")
            commands.uuid_broadcast(self.uuid, path)  # validate now, refuse here rather than in the player
        except (ValueError, KeyError, EslArgumentError) as exc:
            log.warning("play event refused", extra=fields(call=self.uuid, error=str(exc)[:200]))
            return
        self.on_play_file(path)

    def _event_hangup_complete(self, event: Event) -> None:
        self.hangup_cause = event.get("Hangup-Cause")
        self.release()


_EVENT_TABLE: dict[str, Callable[[CallControl, Event], None]] = {
    "DTMF": CallControl._event_dtmf,
    "mod_audio_stream::play": CallControl._event_play,
    "CHANNEL_HANGUP_COMPLETE": CallControl._event_hangup_complete,
}


class ControlPlane:
    """One ESL connection per FreeSWITCH worker, shared by every call on that worker."""

    # How long a call the gateway moved out of park is remembered (its stream closes within ms of the
    # move; the bound only keeps the table small).
    MOVED_TTL_S = 60.0
    MOVED_MAX = 10000

    def __init__(self, clients: dict[str, EslClient], settings: ControlSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clients = clients
        self.settings = settings or ControlSettings()
        self.calls: dict[str, CallControl] = {}
        self._moved: OrderedDict[str, float] = OrderedDict()
        self._clock = clock

    @classmethod
    def from_settings(cls, workers: dict[str, str], **client_options: object) -> ControlPlane:
        """`workers`: worker id -> "host:port:password" (GATEWAY_ESL_WORKERS)."""
        clients = {}
        for worker, spec in workers.items():
            host, port, password = parse_address(spec)
            clients[worker] = EslClient(host, port, password, name=worker,
                                        **client_options)  # type: ignore[arg-type]
        return cls(clients)

    async def start(self) -> None:
        """Connect to every worker in the background; a worker that is down now is retried with backoff."""
        for worker, client in self.clients.items():
            client.subscribe(lambda event, w=worker: self._on_worker_event(w, event))
            await client.start()

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - per-call deadline
        await asyncio.gather(*(c.wait_connected(timeout) for c in self.clients.values()))

    async def close(self) -> None:
        for control in list(self.calls.values()):
            control.release()
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)

    def for_call(self, uuid: str, worker_id: str | None,
                 on_dtmf: Callable[[str], None] | None = None) -> CallControl | None:
        """The call's control object, or None when its worker is unknown (the call then runs without
        transfers; the media plane still ends it by closing the stream)."""
        if worker_id is None or worker_id == "":
            if len(self.clients) != 1:
                log.warning("call control: stream metadata names no worker", extra=fields(call=uuid))
                return None
            worker_id = next(iter(self.clients))
        client = self.clients.get(worker_id)
        if client is None:
            log.warning("call control: unknown worker", extra=fields(call=uuid, worker=worker_id))
            return None
        existing = self.calls.get(uuid)
        if existing is not None and not existing.released:
            return existing
        try:
            control = CallControl(uuid, client, worker_id=worker_id, on_dtmf=on_dtmf,
                                  settings=self.settings, on_release=self._released, on_move=self.mark_moved)
        except EslArgumentError:
            log.warning("call control: malformed channel uuid", extra=fields(call=uuid[:80]))
            return None
        self.calls[uuid] = control
        return control

    def _released(self, control: CallControl) -> None:
        if self.calls.get(control.uuid) is control:
            del self.calls[control.uuid]

    def mark_moved(self, uuid: str) -> None:
        """The gateway itself is moving this call out of park (transfer, conference)."""
        self._moved[uuid] = self._clock() + self.MOVED_TTL_S
        self._moved.move_to_end(uuid)
        while len(self._moved) > self.MOVED_MAX:
            self._moved.popitem(last=False)

    def moved(self, uuid: str) -> bool:
        now = self._clock()
        while self._moved:
            first, expiry = next(iter(self._moved.items()))
            if expiry > now:
                break
            del self._moved[first]
        return uuid in self._moved

    def _on_worker_event(self, worker: str, event: Event) -> None:
        """A call's stream failed or closed. The worker owns what happens next, not the gateway: its
        ai_stream_start.lua tries the next gateway when a connect fails (the `error` may come from that
        attempt, for a call this gateway never had), and its ai_stream_lost.lua reconnects a call left
        parked without a stream to a ready gateway, or releases it (freeswitch-conf/scripts/). A
        hang-up from here would race that reconnect, so the gateway only logs the loss of its own calls."""
        if event.subclass not in ("mod_audio_stream::error", "mod_audio_stream::disconnect"):
            return
        uuid = event.unique_id
        if not uuid or uuid not in self.calls:
            return  # not a call of this gateway (another gateway's, or a failover attempt)
        if event.subclass == "mod_audio_stream::disconnect" and (
                self.moved(uuid) or event.get("variable_current_application") != "park"):
            return  # the gateway moved the call (transfer, conference): the dialplan stopped the stream
        log.warning("audio stream lost on a parked call; the worker reconnects or releases it",
                    extra=fields(call=uuid, worker=worker, event=event.subclass,
                                 detail=(event.body or "")[:200]))

    def status(self) -> dict[str, object]:
        return {w: {"connected": c.connected, "connects": c.connects} for w, c in self.clients.items()}


__all__ = ["CallControl", "CallControlError", "ControlPlane", "ControlSettings", "header_text"]
