"""Call control over ESL: one `CallControl` per call, one `ControlPlane` (EslClient per worker) per process.

Every verb maps 1:1 to documented FreeSWITCH commands (research/freeswitch_protocols.md §2.8-2.9) and
turns a `-ERR` into `CallControlError` carrying FreeSWITCH's own text. The commands and the dialplan
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
a `mod_audio_stream::play` event naming a temp file; `CallControl` plays those files in arrival order
and `flush_playback()` (barge-in) drops what is not yet queued and breaks what is.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid as uuidlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


class CallControlError(Exception):
    """A call-control verb failed. `str()` is a message fit for an operator or for the model to speak.

    `status` is the HTTP status the admin API should answer with: 400 a target FreeSWITCH could never
    accept, 502 FreeSWITCH refused (`reply` holds its `-ERR` text), 503 worker unreachable, 504 timeout.
    """

    def __init__(self, message: str, *, status: int = 502, command: str | None = None,
                 reply: str | None = None) -> None:
        super().__init__(message)
        self.status = status
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
    # Kill calls whose audio fork failed, or closed while the call is still parked: nobody can hear or
    # answer that caller any more.
    hangup_on_stream_error: bool = True
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


class CallControl:
    """Control verbs of one call on one FreeSWITCH worker."""

    def __init__(self, uuid: str, client: EslClient, *, worker_id: str, playback_mode: str = "stream",
                 on_dtmf: Callable[[str], None] | None = None, settings: ControlSettings | None = None,
                 on_release: Callable[[CallControl], None] | None = None) -> None:
        commands.uuid(uuid)  # refuse a malformed uuid before it can reach a command line
        self.uuid = uuid
        self.worker_id = worker_id
        self.playback_mode = playback_mode
        self.settings = settings or ControlSettings()
        self._client = client
        self._on_dtmf = on_dtmf
        self._on_release = on_release
        self._subscription: Subscription | None = client.subscribe(self._on_event, uuid)
        self._play_queue: deque[str] = deque()
        self._play_wakeup = asyncio.Event()
        self._play_lock = asyncio.Lock()  # one broadcast or break on the wire at a time, in order
        self._player: asyncio.Task[None] | None = None
        self.conference: str | None = None
        self.coach_uuid: str | None = None
        self.released = False
        self.hangup_cause: str | None = None
        self.files_played = 0

    # ------------------------------------------------------------------ verbs

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        await self._api(commands.uuid_kill, self.uuid, cause)

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        """Blind transfer: dialplan extension/number, `sip:`/`sips:` URI, or `refer:<uri>` (SIP REFER)."""
        target = target.strip()
        if not target:
            raise CallControlError("empty transfer target", status=400)
        for name, value in (headers or {}).items():
            await self._api(commands.uuid_setvar, self.uuid, self._header_var(name), value)
        if target.startswith("refer:"):
            await self._api(commands.uuid_deflect, self.uuid, target[len("refer:"):])
        elif target.startswith(("sip:", "sips:")):
            if not _SIP_URI.fullmatch(target):
                raise CallControlError(
                    f"transfer target must be a plain sip:user@host URI: {target!r}", status=400)
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
                                       status=400)
            human_vars = {"origination_uuid": human_uuid, "ai_transfer_uri": target,
                          "loopback_export": "ai_transfer_uri"}
            human_dial = f"loopback/{s.transfer_uri_extension}/{s.transfer_context}"
        elif target.startswith("refer:") or not target:
            raise CallControlError(f"a conference participant must be a number or SIP URI, not {target!r}",
                                   status=400)
        else:
            self._check_extension(target)
            human_vars = {"origination_uuid": human_uuid}
            human_dial = f"loopback/{target}/{s.transfer_context}"
        if self.conference is not None:
            # Already in the conference with its coach: just dial one more human in.
            await self._api(commands.conference_dial, name, human_dial, s.caller_id_number, "Caller",
                            human_vars)
        else:
            await self._api(commands.uuid_setvar, self.uuid, "ai_conference", name)
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
        log.info("participant added", extra=fields(call=self.uuid, worker=self.worker_id, target=pii(target),
                                             conference=name))

    async def kick(self, member: str) -> None:
        if self.conference is None:
            raise CallControlError("the call is not in a conference", status=409)
        await self._api(commands.conference_kick, self.conference, member)

    async def play(self, path: str) -> None:
        async with self._play_lock:
            await self._api(commands.uuid_broadcast, self.uuid, path, "aleg")

    async def flush_playback(self) -> None:
        """Barge-in: forget files not yet handed to FreeSWITCH, then stop the current and queued ones."""
        self._play_queue.clear()
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
        if self._player is not None:
            self._player.cancel()
        self._play_queue.clear()
        if self._on_release is not None:
            self._on_release(self)

    # ------------------------------------------------------------------ internals

    def _check_extension(self, target: str) -> None:
        if not re.fullmatch(self.settings.extension_pattern, target):
            raise CallControlError(f"no such transfer target {target!r} (not a number or sip: URI)",
                                   status=400)

    @staticmethod
    def _header_var(name: str) -> str:
        try:
            return commands.sip_header_variable(name)
        except EslArgumentError as exc:
            raise CallControlError(str(exc), status=400) from None

    async def _api(self, builder: Callable[..., str], *args: object) -> str:
        try:
            command = builder(*args)
        except EslArgumentError as exc:
            raise CallControlError(f"invalid argument: {exc}", status=400) from None
        try:
            return await self._client.api(command)
        except EslCommandError as exc:
            log.warning("call control refused",
                        extra=fields(call=self.uuid, worker=self.worker_id,
                               command=command.split(" ", 1)[0], reply=exc.reply))
            raise CallControlError(exc.reason, status=502, command=command, reply=exc.reply) from None
        except EslTimeout as exc:
            raise CallControlError(f"FreeSWITCH worker {self.worker_id} did not answer in time", status=504,
                                   command=command) from exc
        except EslConnectionError as exc:
            raise CallControlError(f"FreeSWITCH worker {self.worker_id} is unreachable", status=503,
                                   command=command) from exc
        except EslError as exc:
            raise CallControlError(f"ESL error: {exc}", status=502, command=command) from exc

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
                raise CallControlError(f"FreeSWITCH worker {self.worker_id}: {exc}", status=503) from exc
            members = [_conference_member(body, u) for u in uuids]
            if all(members):
                return [m for m in members if m]
            if loop.time() >= deadline:
                raise CallControlError(f"conference {name}: participants did not join within "
                                       f"{s.member_join_timeout:g} s", status=504)
            await asyncio.sleep(s.member_poll_interval)

    def _on_event(self, event: Event) -> None:
        handler = _EVENT_TABLE.get(event.subclass or event.name)
        if handler is not None:
            handler(self, event)

    def _event_dtmf(self, event: Event) -> None:
        digit = event.get("DTMF-Digit")
        if digit and self._on_dtmf is not None:
            self._on_dtmf(digit)

    def _event_play(self, event: Event) -> None:
        if self.playback_mode != "file":
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
        self._play_queue.append(path)
        self._play_wakeup.set()
        if self._player is None or self._player.done():
            self._player = asyncio.ensure_future(self._play_files())

    async def _play_files(self) -> None:
        while not self.released:
            while self._play_queue:
                async with self._play_lock:
                    if not self._play_queue:  # flushed while we waited for the lock
                        break
                    path = self._play_queue.popleft()
                    try:
                        await self._client.api(commands.uuid_broadcast(self.uuid, path, "aleg"))
                        self.files_played += 1
                    except EslError as exc:
                        log.warning("file playback failed", extra=fields(call=self.uuid, error=str(exc)))
            self._play_wakeup.clear()
            await self._play_wakeup.wait()

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

    def __init__(self, clients: dict[str, EslClient], playback_mode: dict[str, str] | None = None,
                 settings: ControlSettings | None = None) -> None:
        for worker, mode in (playback_mode or {}).items():
            if mode not in ("stream", "file"):
                raise ValueError(f"playback mode of worker {worker!r} must be stream or file, not {mode!r}")
        self.clients = clients
        self.playback_mode = dict(playback_mode or {})
        self.settings = settings or ControlSettings()
        self.calls: dict[str, CallControl] = {}
        self._tasks: set[asyncio.Task[object]] = set()

    @classmethod
    def from_settings(cls, workers: dict[str, str], playback_mode: dict[str, str] | None = None,
                      **client_options: object) -> ControlPlane:
        """`workers`: worker id -> "host:port:password" (GATEWAY_ESL_WORKERS)."""
        clients = {}
        for worker, spec in workers.items():
            host, port, password = parse_address(spec)
            clients[worker] = EslClient(host, port, password, name=worker,
                                        **client_options)  # type: ignore[arg-type]
        return cls(clients, playback_mode)

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
        for task in list(self._tasks):
            task.cancel()

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
            control = CallControl(uuid, client, worker_id=worker_id,
                                  playback_mode=self.playback_mode.get(worker_id, "stream"), on_dtmf=on_dtmf,
                                  settings=self.settings, on_release=self._released)
        except EslArgumentError:
            log.warning("call control: malformed channel uuid", extra=fields(call=uuid[:80]))
            return None
        self.calls[uuid] = control
        return control

    def _released(self, control: CallControl) -> None:
        if self.calls.get(control.uuid) is control:
            del self.calls[control.uuid]

    def _on_worker_event(self, worker: str, event: Event) -> None:
        if not self.settings.hangup_on_stream_error or not event.unique_id:
            return
        if event.subclass == "mod_audio_stream::error":
            # The fork failed (connect refused, TLS, timeout): the caller can no longer be served.
            why = "audio stream failed, hanging up"
        elif (event.subclass == "mod_audio_stream::disconnect"
              and event.get("variable_current_application") == "park"):
            # The stream closed while the call is still parked for us (gateway restart, crash, network):
            # nobody will ever talk to this caller again; better a hang-up than an hour of silence.
            # A transfer or conference leaves park first, so its own `stop` never lands here.
            why = "audio stream closed on a parked call, hanging up"
        else:
            return
        log.warning(why, extra=fields(call=event.unique_id, worker=worker,
                                detail=(event.body or "")[:200]))
        self._spawn(self._kill(worker, event.unique_id))

    async def _kill(self, worker: str, unique_id: str) -> None:
        try:
            await self.clients[worker].api(commands.uuid_kill(unique_id, "NORMAL_TEMPORARY_FAILURE"))
        except (EslError, ValueError) as exc:
            log.info("stream-error hangup not done", extra=fields(call=unique_id, error=str(exc)))

    def _spawn(self, coro: Awaitable[object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def status(self) -> dict[str, object]:
        return {w: {"connected": c.connected, "connects": c.connects} for w, c in self.clients.items()}


__all__ = ["CallControl", "CallControlError", "ControlPlane", "ControlSettings", "header_text"]
