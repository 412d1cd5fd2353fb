"""mod_audio_stream wire format, sans-I/O: what FreeSWITCH sends us and what we send back.

From the module (mod_audio_stream's README, https://github.com/amigniter/mod_audio_stream#readme, and
the byte captures in tests/gateway's ws_* fixtures):
- optional first text frame: the `start` metadata argument, verbatim (we ask the dialplan for JSON);
- binary frames: L16 little-endian mono PCM at the `start` rate, one per 20 ms normally, any length possible;
- on `stop <text>` one more text frame with that text, then close 1000.
Back to the module: text frames `{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":R,
"audioData":"<base64 L16>"}}` (binary frames from the server are ignored by every build).

Every refusal is a `StreamProtocolError` carrying the WebSocket close code the adapter sends.
`AudioStreamCodec` is this ingress's `gateway.call.transport.MediaCodec`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.proto.media import CallerAudio, InEvent, StreamStart, StreamText

SUPPORTED_RATES = (8000, 16000)
MAX_METADATA_BYTES = 8192  # the dialplan builds a few hundred bytes; anything bigger is not ours
MAX_FRAME_MS = 1000  # largest binary frame we accept (STREAM_BUFFER_SIZE up to 1 s)
UUID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")  # FreeSWITCH uuids, plus test-friendly ids

# WebSocket close codes (RFC 6455 §7.4.1) used for refusals.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class StreamProtocolError(Exception):
    """Input we refuse; `close_code` is what the socket is closed with, `reason` goes in the close frame."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


@dataclass(frozen=True)
class StreamMetadata:
    caller: str = ""
    callee: str = ""
    call_id: str = ""
    worker: str = ""
    profile: str = ""
    rate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_STRING_FIELDS = ("caller", "callee", "call_id", "worker", "profile")


def parse_rate(value: Any) -> int:
    """8000 / 16000, also as the module's own spellings "8k" / "16k" / "8000"."""
    if isinstance(value, bool):
        raise StreamProtocolError(CLOSE_UNSUPPORTED_DATA, "rate must be 8000 or 16000")
    if isinstance(value, str):
        text = value.strip().lower()
        value = int(text[:-1]) * 1000 if text.endswith("k") and text[:-1].isdigit() else text
        if isinstance(value, str):
            if not value.isdigit():
                raise StreamProtocolError(CLOSE_UNSUPPORTED_DATA, "rate must be 8000 or 16000")
            value = int(value)
    if value not in SUPPORTED_RATES:
        raise StreamProtocolError(CLOSE_UNSUPPORTED_DATA, f"unsupported sample rate {value!r}")
    return int(value)


def parse_metadata(text: str | bytes) -> StreamMetadata:
    """The first text frame. Must be a JSON object; known keys are type-checked, others kept in `extra`."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > MAX_METADATA_BYTES:
        raise StreamProtocolError(CLOSE_TOO_BIG, f"metadata larger than {MAX_METADATA_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "metadata is not valid JSON") from None
    if not isinstance(obj, dict):
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "metadata must be a JSON object")
    values: dict[str, Any] = {}
    for key in _STRING_FIELDS:
        v = obj.get(key, "")
        if v is None:
            v = ""
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)  # numbers typed without quotes in a dialplan
        if not isinstance(v, str) or len(v) > 256:
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, f"metadata field {key!r} must be a short string")
        values[key] = v
    rate = parse_rate(obj["rate"]) if obj.get("rate") not in (None, "") else None
    extra = {k: v for k, v in obj.items() if k not in _STRING_FIELDS and k != "rate"}
    return StreamMetadata(rate=rate, extra=extra, **values)


def check_audio_frame(data: bytes | bytearray | memoryview, rate: int) -> None:
    """A binary frame must be whole 16-bit samples and at most MAX_FRAME_MS long."""
    n = len(data)
    if n > rate * 2 * MAX_FRAME_MS // 1000:
        raise StreamProtocolError(CLOSE_TOO_BIG, f"audio frame of {n} bytes exceeds {MAX_FRAME_MS} ms")
    if n % 2:
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, f"odd-length L16 frame ({n} bytes)")


def max_frame_bytes(rate: int = max(SUPPORTED_RATES)) -> int:
    return rate * 2 * MAX_FRAME_MS // 1000


def frame_bytes(rate: int, frame_ms: int = 20) -> int:
    return rate * 2 * frame_ms // 1000


def check_stream_id(uuid: str) -> str:
    if not UUID_RE.match(uuid):
        raise StreamProtocolError(CLOSE_POLICY_VIOLATION, "bad channel uuid in URL")
    return uuid


def build_stream_audio(pcm: bytes | bytearray | memoryview, rate: int) -> str:
    """One playback message: L16 LE at the stream's rate, base64 inside the module's JSON envelope."""
    # Hand-built: this runs 50 times a second per call and json.dumps of the fixed envelope is pure cost.
    b64 = base64.b64encode(pcm).decode("ascii")
    head = '{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":'
    return f'{head}{rate},"audioData":"{b64}"}}}}'


def parse_stream_audio(text: str | bytes) -> tuple[int, bytes]:
    """Inverse of build_stream_audio (used by `gateway call`, which plays the module's part)."""
    try:
        obj = json.loads(text)
        if obj.get("type") != "streamAudio":
            raise ValueError("not streamAudio")
        data = obj["data"]
        if data.get("audioDataType") != "raw":
            raise ValueError("audioDataType must be raw")
        rate = int(data["sampleRate"])
        pcm = base64.b64decode(data["audioData"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, f"bad streamAudio message: {exc}") from None
    if len(pcm) % 2:
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "odd-length audio in streamAudio")
    return rate, pcm


EARLY_FRAMES = 3  # binary frames accepted before the metadata frame (the module may race it)


class AudioStreamCodec:
    """One mod_audio_stream call: L16 binary frames in, `streamAudio` JSON out. No clear/mark messages
    exist in this protocol: barge-in relies on the gateway keeping only a small lead in flight."""

    name = "freeswitch"
    echoes_marks = False

    def __init__(self, uuid: str, *, default_rate: int, query_rate: str | None = None,
                 frame_ms: int = 20) -> None:
        self.uuid = check_stream_id(uuid)
        self.frame_ms = frame_ms
        self._default_rate = parse_rate(query_rate) if query_rate else default_rate
        self.rate = self._default_rate
        self._early: list[bytes] = []
        self.started = False

    def feed_text(self, text: str) -> list[InEvent]:
        if not self.started:
            return self._start(parse_metadata(text))
        # `uuid_audio_stream stop <text>` sends one final text frame; anything else is logged.
        return [StreamText(text[:200])]

    def feed_binary(self, data: bytes) -> list[InEvent]:
        check_audio_frame(data, self.rate)
        if self.started:
            return [CallerAudio(data)]
        self._early.append(data)
        if len(self._early) >= EARLY_FRAMES:
            return self._start(StreamMetadata())
        return []

    def start_timeout(self) -> list[InEvent]:
        return self._start(StreamMetadata())

    def _start(self, meta: StreamMetadata) -> list[InEvent]:
        self.started = True
        self.rate = meta.rate or self._default_rate
        for frame in self._early:
            check_audio_frame(frame, self.rate)
        start = StreamStart(call_id=self.uuid, rate=self.rate, encoding="l16", caller=meta.caller,
                            callee=meta.callee, sip_call_id=meta.call_id, worker=meta.worker,
                            profile=meta.profile, extra=dict(meta.extra))
        events: list[InEvent] = [start, *(CallerAudio(f) for f in self._early)]
        self._early = []
        return events

    def agent_audio(self, audio: bytes) -> str:
        return build_stream_audio(audio, self.rate)

    def clear(self) -> str | None:
        return None

    def mark(self, name: str) -> str | None:
        return None

    def side_text(self, doc: dict[str, Any]) -> str | None:
        # Reaches FreeSWITCH as a mod_audio_stream::json event (visible on ESL).
        return json.dumps(doc)
