"""A loopback FreeSWITCH Event Socket that replays real FreeSWITCH 1.10.12 bytes.

FreeSWITCH cannot run here (not installed, never built), so tests of the ESL client, call control
and the dispatcher talk to this server instead. It is not a mock: every frame it writes is either a
frame cut verbatim from a capture in `fixtures/` (auth/request, `+OK accepted`, `-ERR invalid`, the
disconnect notice, `+OK bye`) or built in exactly the captured layout (api/response, command/reply,
bgapi's reply with its separate Job-UUID header, events serialised like mod_event_socket does from
captured events, with only the channel UUID and the fields a test asks for changed). The fixture
round-trip tests in tests/esl prove the serialisers reproduce the captures byte for byte.

Programmable surface for tests:

    fs = FakeFreeSwitch(password="ClueCon"); await fs.start()   # fs.address == "127.0.0.1:<port>:ClueCon"
    fs.calls = 3                                     # `show calls count` -> "\\n3 total.\\n"
    fs.add_channel(uuid)                             # uuid_* commands on unknown channels get -ERR
    fs.on_api("uuid_deflect", "-ERR Cannot deflect\\n") # canned reply (str) or callable(cmd) -> str
    await fs.emit(uuid, "DTMF", headers={"DTMF-Digit": "5"})
    await fs.emit(uuid, "CUSTOM", subclass="mod_audio_stream::play", body='{"file":"/tmp/x.r8"}')
    await fs.wait_for_command("uuid_transfer")       # -> the full command line received
    fs.commands                                      # every command line received, in order
    await fs.drop()                                  # abort every connection (no FIN handshake)
    await fs.close()

Run standalone (a FreeSWITCH stand-in for manual tests and the `freeswitch`-marked tests' own logic):

    .venv/bin/python tests/fakes/freeswitch_esl.py --port 8021 --password ClueCon
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"

# The A-leg UUID of the captured event sessions; replaced by the UUID a test emits for.
_JSON_CAPTURE = "esl_events_json_call_upstream.fs.bin"
_PLAIN_CAPTURE = "esl_events_plain_call_upstream.fs.bin"

# Characters mod_event_socket percent-encodes in plain events (switch_url_encode, SWITCH_URL_UNSAFE),
# plus every byte below 0x20 or above 0x7E.
_URL_UNSAFE = set(b'\r\n #%&+:;<=>?@[\\]^`{|}"')


def split_frames(data: bytes) -> list[bytes]:
    """Cut a captured FreeSWITCH->client byte stream into its frames (headers + Content-Length body)."""
    frames, pos = [], 0
    while pos < len(data):
        end = data.index(b"\n\n", pos)
        head = data[pos:end]
        match = re.search(rb"(?m)^Content-Length: (\d+)$", head)
        stop = end + 2 + (int(match.group(1)) if match else 0)
        frames.append(data[pos:stop])
        pos = stop
    return frames


def read_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def url_encode(value: str) -> str:
    """switch_url_encode with double_encode off: an existing valid %XX sequence is left alone."""
    raw = value.encode("utf-8")
    out = []
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x25 and re.fullmatch(rb"%[0-9A-Fa-f]{2}", raw[i : i + 3]):
            out.append("%")
        elif b < 0x20 or b > 0x7E or b in _URL_UNSAFE:
            out.append(f"%{b:02X}")
        else:
            out.append(chr(b))
        i += 1
    return "".join(out)


Headers = dict[str, str] | list[tuple[str, str]]


def _items(headers: Headers) -> list[tuple[str, str]]:
    # FreeSWITCH events may repeat a header (CHANNEL_HANGUP_COMPLETE carries Hangup-Cause twice), so
    # the serialisers also take a list of pairs to reproduce a capture exactly.
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def serialize_plain(headers: Headers, body: str | None) -> bytes:
    """Event body as `switch_event_serialize(..., encode=TRUE)` writes it."""
    lines = [
        f"{name}: {url_encode(value) if value != '' else '_undef_'}\n" for name, value in _items(headers)
    ]
    text = "".join(lines)
    if body is not None:
        raw = body.encode("utf-8")
        return text.encode("utf-8") + f"Content-Length: {len(raw)}\n\n".encode() + raw
    return text.encode("utf-8") + b"\n"


def serialize_json(headers: Headers, body: str | None) -> bytes:
    """Event body as cJSON_PrintUnformatted writes `switch_event_serialize_json_obj`."""
    items = _items(headers)
    if body is not None:
        items += [("Content-Length", str(len(body.encode("utf-8")))), ("_body", body)]
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return ("{" + ",".join(f"{dump(k)}:{dump(v)}" for k, v in items) + "}").encode("utf-8")


def frame_event(fmt: str, headers: Headers, body: str | None) -> bytes:
    payload = serialize_json(headers, body) if fmt == "json" else serialize_plain(headers, body)
    ctype = "text/event-json" if fmt == "json" else "text/event-plain"
    return f"Content-Length: {len(payload)}\nContent-Type: {ctype}\n\n".encode() + payload


def frame_api(body: str) -> bytes:
    raw = body.encode("utf-8")
    return f"Content-Type: api/response\nContent-Length: {len(raw)}\n\n".encode() + raw


def frame_reply(text: str, extra: dict[str, str] | None = None) -> bytes:
    lines = ["Content-Type: command/reply", f"Reply-Text: {text}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\n".join(lines) + "\n\n").encode()


def _captured_events(name: str) -> list[tuple[dict[str, str], str | None]]:
    """The JSON events of a capture as (headers in wire order, body)."""
    out = []
    for frame in split_frames(read_fixture(name)):
        if b"Content-Type: text/event-json" not in frame.split(b"\n\n", 1)[0]:
            continue
        obj = json.loads(frame.split(b"\n\n", 1)[1])
        body = obj.pop("_body", None)
        if body is not None:
            obj.pop("Content-Length", None)
        out.append((obj, body))
    return out


class _Templates:
    """Captured events to build new ones from, keyed by Event-Name or CUSTOM subclass."""

    def __init__(self) -> None:
        events = _captured_events(_JSON_CAPTURE)
        self.capture_uuid = events[0][0]["Unique-ID"]
        self.by_key: dict[str, dict[str, str]] = {}
        for headers, _ in events:
            self.by_key.setdefault(headers.get("Event-Subclass") or headers["Event-Name"], headers)
        self.background_job = _captured_events("esl_bgapi_jobuuid_json.fs.bin")[0][0]
        self.core_uuid = self.background_job["Core-UUID"]

    def channel_event(self, name: str, unique_id: str, subclass: str | None) -> dict[str, str]:
        key = subclass or name
        if key in self.by_key:
            base = self.by_key[key]
        elif name == "CUSTOM":
            base = self.by_key["mod_audio_stream::connect"]
        else:
            base = self.by_key["CHANNEL_ANSWER"]
        headers = {k: v.replace(self.capture_uuid, unique_id) for k, v in base.items()}
        headers["Event-Name"] = name
        if name == "CUSTOM":
            # FreeSWITCH writes Event-Subclass first on CUSTOM events (see the capture).
            headers = {
                "Event-Subclass": subclass or "",
                **{k: v for k, v in headers.items() if k != "Event-Subclass"},
            }
        else:
            headers.pop("Event-Subclass", None)
        return headers


_templates: _Templates | None = None


def templates() -> _Templates:
    global _templates
    if _templates is None:
        _templates = _Templates()
    return _templates


@dataclass
class Conference:
    """Enough of mod_conference for `list`, `relate`, `kick` and member joins."""

    name: str
    profile: str
    members: list[tuple[int, str, str]] = field(default_factory=list)  # (member id, uuid, caller id number)
    relations: list[str] = field(default_factory=list)
    next_id: int = 1

    def join(self, unique_id: str, cid: str) -> int:
        member = self.next_id
        self.next_id += 1
        self.members.append((member, unique_id, cid))
        return member

    def list_text(self) -> str:
        # Newest first, in the captured `conference <name> list` layout (fixtures/api_conference_list.txt).
        return "".join(
            f"{mid};sofia/internal/{cid};{uid};{cid};{cid};hear|speak;0;0;100\n"
            for mid, uid, cid in reversed(self.members)
        )


class _Connection:
    def __init__(
        self, fs: FakeFreeSwitch, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.fs, self.reader, self.writer = fs, reader, writer
        self.authed = False
        self.format: str | None = None
        self.events: set[str] = set()
        self.custom: set[str] = set()
        self.filters: list[tuple[str, str]] = []

    def wants(self, headers: dict[str, str]) -> bool:
        if self.format is None:
            return False
        name = headers.get("Event-Name", "")
        if "ALL" not in self.events:
            if name == "CUSTOM":
                if headers.get("Event-Subclass") not in self.custom:
                    return False
            elif name not in self.events:
                return False
        if not self.filters:
            return True
        return any(headers.get(h) == v for h, v in self.filters)

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


ApiReply = str | Callable[[str], str]


class FakeFreeSwitch:
    def __init__(self, password: str = "ClueCon", host: str = "127.0.0.1") -> None:
        self.password = password
        self.host = host
        self.port = 0
        self.calls = 0
        self.channels: set[str] = set()
        self.conferences: dict[str, Conference] = {}
        self.channel_vars: dict[str, dict[str, str]] = {}
        self.commands: list[str] = []
        self.command_headers: list[dict[str, str]] = []
        self.auth_attempts: list[str] = []
        self.bgapi_delay = 0.0
        self.event_reply: str | None = None  # e.g. "-ERR ..." to refuse `event` subscriptions
        self.api_delay = 0.0
        self._replies: list[tuple[str, ApiReply]] = []
        self._server: asyncio.base_events.Server | None = None
        self._connections: list[_Connection] = []
        self._command_seen = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        frames = split_frames(read_fixture("esl_auth_exit.fs.bin"))
        self.frame_auth_request, self.frame_accepted, self.frame_bye, self.frame_disconnect = frames
        self.frame_invalid = split_frames(read_fixture("esl_auth_fail.fs.bin"))[1]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> FakeFreeSwitch:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}:{self.password}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def drop(self) -> None:
        """Abort every client connection, as a crashed or restarted FreeSWITCH would."""
        for conn in list(self._connections):
            transport = conn.writer.transport
            transport.abort()
        self._connections.clear()
        await asyncio.sleep(0)

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def restart_listening(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ programming

    def add_channel(self, unique_id: str) -> None:
        self.channels.add(unique_id)

    def on_api(self, prefix: str, reply: ApiReply) -> None:
        """Answer API commands starting with `prefix` (newest registration wins)."""
        self._replies.insert(0, (prefix, reply))

    async def emit(
        self,
        unique_id: str,
        name: str,
        *,
        subclass: str | None = None,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Send an event built from a captured one to every connection subscribed to it."""
        event = templates().channel_event(name, unique_id, subclass)
        event.update(headers or {})
        await self._broadcast(event, body)
        return event

    async def emit_raw(self, data: bytes) -> None:
        """Write raw bytes to every authenticated connection (for malformed-input tests)."""
        for conn in list(self._connections):
            if conn.authed:
                await conn.send(data)

    async def wait_for_command(self, prefix: str, timeout: float = 5.0, start: int = 0) -> str:  # noqa: ASYNC109 - per-call deadline
        """The first command line (from index `start`) beginning with `prefix`."""

        async def find() -> str:
            async with self._command_seen:
                while True:
                    for line in self.commands[start:]:
                        if line.startswith(prefix):
                            return line
                    await self._command_seen.wait()

        return await asyncio.wait_for(find(), timeout)

    def api_commands(self) -> list[str]:
        """The API commands received (`api X` and `bgapi X` both give `X`)."""
        out = []
        for line in self.commands:
            verb, _, rest = line.partition(" ")
            if verb in ("api", "bgapi"):
                out.append(rest)
        return out

    # ------------------------------------------------------------------ protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._connections.append(conn)
        try:
            await conn.send(self.frame_auth_request)
            while True:
                try:
                    head = await reader.readuntil(b"\n\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                text = head.decode("utf-8", "replace").strip("\n")
                if not text:
                    continue
                lines = text.split("\n")
                command = lines[0].rstrip("\r")
                hdrs = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    hdrs[name.strip()] = value.strip()
                if "Content-Length" in hdrs:
                    await reader.readexactly(int(hdrs["Content-Length"]))
                if not await self._handle(conn, command, hdrs):
                    return
        finally:
            with contextlib.suppress(ValueError):
                self._connections.remove(conn)
            writer.close()

    async def _record(self, command: str, hdrs: dict[str, str]) -> None:
        async with self._command_seen:
            self.commands.append(command)
            self.command_headers.append(hdrs)
            self._command_seen.notify_all()

    async def _handle(self, conn: _Connection, command: str, hdrs: dict[str, str]) -> bool:
        if not conn.authed:
            if command.startswith("auth "):
                self.auth_attempts.append(command[5:])
                if command[5:] == self.password:
                    conn.authed = True
                    await conn.send(self.frame_accepted)
                    return True
                await conn.send(self.frame_invalid + self.frame_disconnect)
                return False
            await conn.send(frame_reply("-ERR command not found"))
            return True
        await self._record(command, hdrs)
        verb, _, rest = command.partition(" ")
        if verb == "api":
            if self.api_delay:
                await asyncio.sleep(self.api_delay)
            await conn.send(frame_api(await self._run_api(rest)))
        elif verb == "bgapi":
            job = hdrs.get("Job-UUID") or str(uuidlib.uuid4())
            await conn.send(frame_reply(f"+OK Job-UUID: {job}", {"Job-UUID": job}))
            task = asyncio.create_task(self._background_job(rest, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif verb in ("event", "events") and self.event_reply is not None:
            await conn.send(frame_reply(self.event_reply))
        elif verb in ("event", "events"):
            parts = rest.split()
            if not parts or parts[0] not in ("plain", "json", "xml"):
                await conn.send(frame_reply("-ERR no keywords supplied"))
                return True
            conn.format = parts[0]
            target = conn.events
            for token in parts[1:]:
                if token == "CUSTOM":
                    target = conn.custom
                    continue
                target.add(token)
            await conn.send(frame_reply(f"+OK event listener enabled {conn.format}"))
        elif verb == "filter":
            parts = rest.split(" ", 2)
            if parts[0] == "delete" and len(parts) >= 2:
                header = parts[1]
                value = parts[2] if len(parts) > 2 else None
                if header == "all":
                    conn.filters.clear()
                else:
                    conn.filters = [
                        (h, v) for h, v in conn.filters if not (h == header and value in (None, v))
                    ]
                await conn.send(frame_reply(f"+OK filter deleted. [{header}][{value or ''}]"))
            elif len(parts) >= 2:
                conn.filters.append((parts[0], " ".join(parts[1:])))
                await conn.send(frame_reply(f"+OK filter added. [{parts[0]}]=[{' '.join(parts[1:])}]"))
            else:
                await conn.send(frame_reply("-ERR invalid syntax"))
        elif verb == "noevents":
            if conn.format is None:
                await conn.send(frame_reply("-ERR not listening for events"))
            else:
                conn.format = None
                conn.events.clear()
                conn.custom.clear()
                await conn.send(frame_reply("+OK no longer listening for events"))
        elif verb in ("exit", "..."):
            await conn.send(self.frame_bye + self.frame_disconnect)
            return False
        else:
            await conn.send(frame_reply("-ERR command not found"))
        return True

    async def _background_job(self, cmd: str, job: str) -> None:
        if self.bgapi_delay:
            await asyncio.sleep(self.bgapi_delay)
        body = await self._run_api(cmd)
        name, _, arg = cmd.partition(" ")
        headers = {k: v for k, v in templates().background_job.items()}
        headers.update({"Job-UUID": job, "Job-Command": name})
        if arg:
            headers["Job-Command-Arg"] = arg
        else:
            headers.pop("Job-Command-Arg", None)
        await self._broadcast(headers, body)

    async def _broadcast(self, headers: dict[str, str], body: str | None) -> None:
        for conn in list(self._connections):
            if conn.authed and conn.wants(headers):
                await conn.send(frame_event(conn.format or "plain", headers, body))

    # ------------------------------------------------------------------ API behaviour

    async def _run_api(self, cmd: str) -> str:
        for prefix, reply in self._replies:
            if cmd.startswith(prefix):
                return reply(cmd) if callable(reply) else reply
        return await self._default_api(cmd)

    async def _default_api(self, cmd: str) -> str:
        args = cmd.split(" ")
        name = args[0]
        if cmd == "show calls count":
            return f"\n{self.calls} total.\n"
        if cmd == "status":
            return read_fixture("api_status.txt").decode()
        if name.startswith("uuid_"):
            if len(args) < 2:
                return f"-USAGE: {name} <uuid> ...\n"
            target = args[1]
            if target not in self.channels:
                if name == "uuid_audio_stream":
                    return read_fixture("api_upstream_uas_start_bad_uuid.txt").decode()
                return "-ERR No such channel!\n"
            return await self._channel_api(name, target, args[2:], cmd)
        if name == "conference" and len(args) >= 3:
            return self._conference_api(args[1], args[2], args[3:])
        if name == "originate" and len(args) >= 3:
            return await self._originate(args[1])
        return f"-ERR {name} Command not found!\n"

    async def _originate(self, dial: str) -> str:
        """A call that answers at once (what `loopback/...answer^park` does on a real worker)."""
        match = re.search(r"origination_uuid=([A-Za-z0-9-]+)", dial)
        leg = match.group(1) if match else str(uuidlib.uuid4())
        self.channels.add(leg)
        await self.emit(leg, "CHANNEL_CREATE")
        await self.emit(leg, "CHANNEL_ANSWER")
        return f"+OK {leg}\n"

    async def _channel_api(self, name: str, target: str, args: list[str], cmd: str) -> str:
        if name == "uuid_kill":
            self.channels.discard(target)
            cause = args[0] if args else "NORMAL_CLEARING"
            await self.emit(target, "CHANNEL_HANGUP", headers={"Hangup-Cause": cause})
            await self.emit(target, "CHANNEL_HANGUP_COMPLETE", headers={"Hangup-Cause": cause})
            return "+OK\n"
        if name == "uuid_broadcast":
            return "+OK Message sent\n"
        if name == "uuid_audio_stream":
            return read_fixture("api_upstream_uas_stop_ok.txt").decode()
        if name == "uuid_setvar" and args:
            # The value is the rest of the line (switch_separate_string's last slot keeps spaces).
            value = cmd.split(" ", 3)[3] if len(args) > 1 else ""
            self.channel_vars.setdefault(target, {})[args[0]] = value
            return "+OK\n"
        if name == "uuid_transfer":
            # What freeswitch-conf's ai-conference extension does: join the conference named in ai_conference.
            if args and args[0] == "ai-conference":
                conf_name = self.channel_vars.get(target, {}).get("ai_conference")
                if conf_name:
                    conf = self.conferences.setdefault(conf_name, Conference(conf_name, "ai-assist"))
                    conf.join(target, "caller")
            match = re.search(r"'(?:m:\^:)?conference:([^@'^]+)@([^'^+]+)[^']*' inline", cmd)
            if match:
                conf = self.conferences.setdefault(match.group(1), Conference(match.group(1), match.group(2)))
                conf.join(target, "caller")
            return "+OK\n"
        return "+OK\n"

    def _conference_api(self, conf_name: str, sub: str, args: list[str]) -> str:
        conf = self.conferences.get(conf_name)
        if sub == "bgdial":
            dial = args[0] if args else ""
            match = re.search(r"origination_uuid=([A-Za-z0-9-]+)", dial)
            leg = match.group(1) if match else str(uuidlib.uuid4())
            if conf is None:
                conf = self.conferences.setdefault(conf_name, Conference(conf_name, "default"))
            self.channels.add(leg)
            conf.join(leg, args[1] if len(args) > 1 else "0000000000")
            return f"+OK Job-UUID: {uuidlib.uuid4()}\n"
        if conf is None:
            return f"-ERR Conference {conf_name} not found\n"
        if sub == "list":
            return conf.list_text()
        if sub == "relate" and len(args) >= 3:
            conf.relations.append(" ".join(args[:3]))
            return f"+OK relationship {args[0]}->{args[1]} set\n"
        if sub == "kick" and args:
            before = len(conf.members)
            conf.members = [m for m in conf.members if str(m[0]) != args[0]]
            return "+OK kicked " + args[0] + "\n" if len(conf.members) < before else "-ERR Non-Existent ID\n"
        return "+OK\n"


async def _serve_forever(port: int, password: str) -> None:
    fs = FakeFreeSwitch(password=password)
    fs._server = await asyncio.start_server(fs._serve, fs.host, port)
    fs.port = fs._server.sockets[0].getsockname()[1]
    print(f"fake FreeSWITCH ESL listening on {fs.address}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fs.close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="loopback FreeSWITCH Event Socket replaying captured bytes")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--password", default="ClueCon")
    ns = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(ns.port, ns.password))
