"""Sans-I/O Event Socket (ESL) protocol: bytes from FreeSWITCH in, typed messages out; commands out as bytes.

No sockets, clocks or asyncio here, so the parser can be fed a recorded session split at every byte
offset (tests/esl). Facts this follows (the Event Socket documentation,
https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_event_socket_1048924/, and
the captured sessions in tests/fakes/fixtures/esl_*.fs.bin):

* Every message from FreeSWITCH is a header block ending in a blank line (`\\n\\n`), then exactly
  `Content-Length` *bytes* of body if that header is present. Framing is done on bytes; text is
  decoded only after a frame is complete (a multibyte character may straddle two TCP reads).
* `text/event-plain` bodies hold an inner header block whose values are percent-encoded; they are
  split into lines first and decoded per value (decoding first would turn an encoded `%0A` into a
  line break), then an inner `Content-Length` gives the event body (e.g. mod_audio_stream JSON).
* `text/event-json` bodies are one JSON object of strings (arrays for array headers); the event body
  is under `_body`.
* Limits are named (`MAX_HEADER_BYTES`, `MAX_FRAME_BYTES`) and exceeding them raises a typed error:
  a peer that never ends its headers cannot make us buffer without bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from gateway.esl.errors import (
    EslArgumentError,
    EslFrameTooLarge,
    EslHeaderTooLarge,
    EslMalformedFrame,
)

# A FreeSWITCH header block is a few KB (a CUSTOM event with every channel variable is ~4 KB, but that
# sits in the body); 64 KiB leaves room for huge variable sets while bounding a hostile peer.
MAX_HEADER_BYTES = 64 * 1024
# mod_event_socket refuses client bodies above 16 MiB (MAX_CONTENT_LENGTH); we hold FreeSWITCH to the same.
MAX_FRAME_BYTES = 16 * 1024 * 1024

_HEADER_END = b"\n\n"


# --------------------------------------------------------------------------------------------------
# Messages out of the parser


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """`Content-Type: auth/request`: FreeSWITCH greets a new connection and waits for `auth`."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    """`Content-Type: command/reply`: the answer to auth, event, filter, bgapi, exit ..."""

    reply_text: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reply_text.startswith("+OK")

    @property
    def job_uuid(self) -> str | None:
        """For `bgapi`: FreeSWITCH sends the id both in `Reply-Text` and as its own header."""
        return self.headers.get("Job-UUID")


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """`Content-Type: api/response`: the output of `api <cmd>`, verbatim (often ends with `\\n`)."""

    body: str

    @property
    def ok(self) -> bool:
        return not is_error_reply(self.body)


@dataclass(frozen=True, slots=True)
class Event:
    """A FreeSWITCH event (plain or JSON on the wire; the same shape here).

    `headers` maps header names to decoded strings. A JSON array header is joined back into
    FreeSWITCH's own plain-text form (`ARRAY::a|:b`) so both wire formats give identical objects.
    `body` is the event body (a BACKGROUND_JOB result, a mod_audio_stream JSON document) or None.
    """

    headers: Mapping[str, str]
    body: str | None = None
    format: str = "plain"

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    @property
    def unique_id(self) -> str | None:
        return self.headers.get("Unique-ID")

    @property
    def job_uuid(self) -> str | None:
        return self.headers.get("Job-UUID")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def json_body(self) -> object:
        """The body parsed as JSON (mod_audio_stream events); raises ValueError if it is not JSON."""
        if self.body is None:
            raise ValueError("event has no body")
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class InvalidEvent:
    """An event frame that framed correctly but whose content could not be parsed.

    The stream itself is intact (the outer Content-Length was honoured), so the connection survives
    and the adapter logs a refusal instead of dropping every call on the worker.
    """

    content_type: str
    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class LogData:
    """`Content-Type: log/data` after `log <level>`: one log line with its Log-* headers."""

    headers: Mapping[str, str]
    body: str


@dataclass(frozen=True, slots=True)
class DisconnectNotice:
    """`Content-Type: text/disconnect-notice`: FreeSWITCH is about to close the socket."""

    headers: Mapping[str, str]
    body: str


@dataclass(frozen=True, slots=True)
class RudeRejection:
    """`Content-Type: text/rude-rejection`: our address failed the event_socket ACL."""

    body: str


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A well-framed message of a Content-Type this parser does not model (kept, not dropped)."""

    headers: Mapping[str, str]
    body: bytes


EslMessage = (
    AuthRequest
    | CommandReply
    | ApiResponse
    | Event
    | InvalidEvent
    | LogData
    | DisconnectNotice
    | RudeRejection
    | UnknownFrame
)


def is_error_reply(text: str) -> bool:
    """`-ERR ...` and `-USAGE: ...` are how FreeSWITCH API commands refuse (fixtures/api_*_uas_*.txt)."""
    return text.startswith("-ERR") or text.startswith("-USAGE")


# --------------------------------------------------------------------------------------------------
# Parser


def _parse_header_block(block: bytes, *, decode_values: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_line in block.split(b"\n"):
        line = raw_line.rstrip(b"\r")
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name:
            raise EslMalformedFrame(f"header line without a name and colon: {line[:80]!r}")
        # mod_event_socket writes "Name: value"; strip the single space (and any run of them), like FS does.
        text = value.lstrip(b" ").decode("utf-8", errors="replace")
        if decode_values:
            text = unquote(text, encoding="utf-8", errors="replace")
        headers[name.decode("ascii", errors="replace").strip()] = text
    return headers


def _content_length(headers: Mapping[str, str], *, where: str) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    raw = raw.strip()
    if not raw.isdigit():  # isdigit refuses signs, spaces and empty strings
        raise EslMalformedFrame(f"{where} Content-Length is not a byte count: {raw[:40]!r}")
    length = int(raw)
    if length > MAX_FRAME_BYTES:
        raise EslFrameTooLarge(f"{where} Content-Length {length} exceeds MAX_FRAME_BYTES={MAX_FRAME_BYTES}")
    return length


def parse_plain_event(data: bytes) -> Event:
    """Decode a `text/event-plain` body: percent-encoded header lines, optional inner body."""
    end = data.find(_HEADER_END)
    if end < 0:
        # An event with no body ends its block with the extra newline; tolerate a missing one.
        block, rest = data, b""
    else:
        block, rest = data[:end], data[end + 2 :]
    headers = _parse_header_block(block, decode_values=True)
    body: str | None = None
    if "Content-Length" in headers:
        length = _content_length(headers, where="inner event")
        if length > len(rest):
            raise ValueError(f"inner Content-Length {length} exceeds the {len(rest)} bytes left in the event")
        body = rest[:length].decode("utf-8", errors="replace")
    return Event(headers=headers, body=body, format="plain")


def parse_json_event(data: bytes) -> Event:
    """Decode a `text/event-json` body; the event body travels as the `_body` member."""
    obj = json.loads(data.decode("utf-8", errors="strict"))
    if not isinstance(obj, dict):
        raise ValueError("JSON event is not an object")
    headers: dict[str, str] = {}
    body: str | None = None
    for key, value in obj.items():
        if key == "_body":
            body = value if isinstance(value, str) else json.dumps(value)
        elif isinstance(value, str):
            headers[key] = value
        elif isinstance(value, list):
            headers[key] = "ARRAY::" + "|:".join(str(v) for v in value)
        else:
            headers[key] = json.dumps(value)
    return Event(headers=headers, body=body, format="json")


class EslParser:
    """Incremental ESL parser. `feed(bytes)` returns every message completed by those bytes.

    After a protocol error the parser refuses further input: the byte stream has lost its framing
    and the only safe recovery is a new connection (the adapter's job, not ours).
    """

    __slots__ = ("_buffer", "_headers", "_need", "_failed")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._headers: dict[str, str] | None = None  # outer headers of a frame waiting for its body
        self._need = 0
        self._failed: Exception | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EslMessage]:
        if self._failed is not None:
            raise EslMalformedFrame("parser already failed; open a new connection") from self._failed
        self._buffer += data
        out: list[EslMessage] = []
        try:
            while True:
                if self._headers is None:
                    # Blank lines between messages carry nothing (FS's own reader skips them too).
                    while self._buffer[:1] == b"\n":
                        del self._buffer[:1]
                    end = self._buffer.find(_HEADER_END)
                    if end < 0:
                        if len(self._buffer) > MAX_HEADER_BYTES:
                            raise EslHeaderTooLarge(
                                f"no end of headers within MAX_HEADER_BYTES={MAX_HEADER_BYTES}"
                            )
                        return out
                    if end > MAX_HEADER_BYTES:
                        raise EslHeaderTooLarge(f"header block of {end} bytes exceeds MAX_HEADER_BYTES")
                    headers = _parse_header_block(bytes(self._buffer[:end]), decode_values=False)
                    del self._buffer[: end + 2]
                    self._need = _content_length(headers, where="frame")
                    self._headers = headers
                if len(self._buffer) < self._need:
                    return out
                body = bytes(self._buffer[: self._need])
                del self._buffer[: self._need]
                headers, self._headers, self._need = self._headers, None, 0
                out.append(_message(headers, body))
        except Exception as exc:
            self._failed = exc
            raise


def _message(headers: dict[str, str], body: bytes) -> EslMessage:
    ctype = headers.get("Content-Type", "")
    if ctype == "auth/request":
        return AuthRequest()
    if ctype == "command/reply":
        return CommandReply(reply_text=headers.get("Reply-Text", ""), headers=headers)
    if ctype == "api/response":
        return ApiResponse(body=body.decode("utf-8", errors="replace"))
    if ctype in ("text/event-plain", "text/event-json"):
        try:
            return parse_plain_event(body) if ctype == "text/event-plain" else parse_json_event(body)
        except (
            ValueError,
            EslMalformedFrame,
        ) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return InvalidEvent(content_type=ctype, reason=str(exc)[:200], raw=body)
    if ctype == "log/data":
        return LogData(headers=headers, body=body.decode("utf-8", errors="replace"))
    if ctype == "text/disconnect-notice":
        return DisconnectNotice(headers=headers, body=body.decode("utf-8", errors="replace"))
    if ctype == "text/rude-rejection":
        return RudeRejection(body=body.decode("utf-8", errors="replace"))
    return UnknownFrame(headers=headers, body=body)


# --------------------------------------------------------------------------------------------------
# Command builders (client -> FreeSWITCH). Every command is one line ending in a blank line.

_FORBIDDEN_IN_LINE = re.compile(r"[\r\n\x00]")
EVENT_FORMATS = ("plain", "json", "xml")


def _line(text: str, *, what: str) -> str:
    if _FORBIDDEN_IN_LINE.search(text):
        raise EslArgumentError(f"{what} contains a line break or NUL: {text[:60]!r}")
    return text


def _frame(command: str, headers: Mapping[str, str] | None = None) -> bytes:
    lines = [_line(command, what="command")]
    for name, value in (headers or {}).items():
        lines.append(f"{_line(name, what='header name')}: {_line(value, what='header value')}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def auth(password: str) -> bytes:
    if not password or " " in password:
        raise EslArgumentError("ESL password must be non-empty and contain no spaces")
    return _frame(f"auth {password}")


def api(command: str) -> bytes:
    if not command.strip():
        raise EslArgumentError("empty API command")
    return _frame(f"api {command}")


def bgapi(command: str, job_uuid: str | None = None) -> bytes:
    """`bgapi <cmd>`; with `job_uuid` FreeSWITCH uses our id (fixtures/esl_bgapi_jobuuid_json)."""
    if not command.strip():
        raise EslArgumentError("empty API command")
    return _frame(f"bgapi {command}", {"Job-UUID": job_uuid} if job_uuid else None)


def event(fmt: str, events: Iterable[str], custom: Iterable[str] = ()) -> bytes:
    """`event <fmt> NAME ... [CUSTOM sub ...]`; the format keyword must come first."""
    if fmt not in EVENT_FORMATS:
        raise EslArgumentError(f"event format must be one of {EVENT_FORMATS}, not {fmt!r}")
    names = [_token(n, what="event name") for n in events]
    subclasses = [_token(s, what="event subclass") for s in custom]
    if subclasses:
        names += ["CUSTOM", *subclasses]
    if not names:
        raise EslArgumentError("no events to subscribe to")
    return _frame(" ".join(["event", fmt, *names]))


def filter_add(header: str, value: str) -> bytes:
    return _frame(f"filter {_token(header, what='filter header')} {_line(value, what='filter value')}")


def filter_delete(header: str, value: str | None = None) -> bytes:
    cmd = f"filter delete {_token(header, what='filter header')}"
    if value is not None:
        cmd += f" {_line(value, what='filter value')}"
    return _frame(cmd)


def noevents() -> bytes:
    return _frame("noevents")


def log(level: int | str) -> bytes:
    return _frame(f"log {_token(str(level), what='log level')}")


def nolog() -> bytes:
    return _frame("nolog")


def exit_() -> bytes:
    return _frame("exit")


# --------------------------------------------------------------------------------------------------
# Argument checks shared by the API command builders in gateway.esl.commands

_TOKEN = re.compile(r"[^\s'\"\\]+")


def _token(value: str, *, what: str) -> str:
    """One FreeSWITCH argument: no whitespace (args split on spaces), quotes or backslashes (both are
    consumed by switch_separate_string), no line breaks (would end the ESL frame)."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise EslArgumentError(f"{what} must be one token without spaces, quotes or backslashes: {value!r}")
    return value
