"""Twilio Media Streams (bidirectional `<Connect><Stream>`) wire format, sans-I/O.

Messages, as documented at https://www.twilio.com/docs/voice/media-streams/websocket-messages:
from Twilio (JSON text frames) `connected`, `start` (streamSid, callSid, tracks, customParameters,
mediaFormat audio/x-mulaw 8000 mono), `media` (base64 mu-law, ~20 ms), `dtmf`, `mark` (the echo of
ours once the audio before it has played), `stop`; to Twilio `media` (base64 mu-law, no file header,
"buffered and played in the order received"), `mark` and `clear` (empties Twilio's buffer).

`TwilioMediaCodec` is this ingress's `gateway.call.transport.MediaCodec`. Every refusal is a
`StreamProtocolError` with the close code the adapter sends; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import Any

from gateway.log import fields
from gateway.proto.audio_stream import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    StreamProtocolError,
)
from gateway.proto.media import CallerAudio, Dtmf, InEvent, MarkPlayed, StreamStart, StreamStopped

MAX_MESSAGE_BYTES = 64 * 1024  # a 20 ms media message is ~300 bytes; a start with parameters a few KB
MAX_MEDIA_BYTES = 8000  # one second of mu-law in one message: far beyond Twilio's 20 ms chunks
MULAW_8K = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")
_CONVERSATION_SID = re.compile(r"CH[0-9a-f]{32}")
log = logging.getLogger("gateway.twilio")
_DIGIT = re.compile(r"^[0-9*#A-D]$")


def _sid(value: Any, prefix: str, what: str) -> str:
    if not isinstance(value, str) or not _SID.match(value) or not value.startswith(prefix):
        raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, f"{what} is not a Twilio {prefix} SID")
    return value


class TwilioMediaCodec:
    name = "twilio"
    frame_ms = 20
    echoes_marks = True

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None

    # ------------------------------------------------------------------ in
    def feed_binary(self, data: bytes) -> list[InEvent]:
        raise StreamProtocolError(CLOSE_PROTOCOL_ERROR, "Twilio Media Streams sends only text frames")

    def feed_text(self, text: str) -> list[InEvent]:
        if len(text) > MAX_MESSAGE_BYTES:
            raise StreamProtocolError(CLOSE_TOO_BIG, f"message larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "message is not valid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "message has no event")
        event = msg["event"]
        if event == "connected":
            return []
        if event == "start":
            return self._start(msg)
        if self.stream_sid is None:
            raise StreamProtocolError(CLOSE_PROTOCOL_ERROR, f"{event} before start")
        if msg.get("streamSid") != self.stream_sid:
            raise StreamProtocolError(CLOSE_POLICY_VIOLATION, "message for another streamSid")
        handler = _INBOUND.get(event)
        if handler is None:
            raise StreamProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown event {event[:40]!r}")
        return handler(self, msg)

    def _start(self, msg: dict[str, Any]) -> list[InEvent]:
        if self.stream_sid is not None:
            raise StreamProtocolError(CLOSE_PROTOCOL_ERROR, "second start on one stream")
        start = msg.get("start")
        if not isinstance(start, dict):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "start without a start object")
        stream_sid = _sid(start.get("streamSid", msg.get("streamSid")), "MZ", "streamSid")
        call_sid = _sid(start.get("callSid"), "CA", "callSid")
        fmt = start.get("mediaFormat")
        if fmt != MULAW_8K:
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, f"unsupported mediaFormat {str(fmt)[:80]}")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) and len(v) <= 256
                                                   for v in params.values()):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "customParameters must be short strings")
        self.stream_sid, self.call_sid = stream_sid, call_sid
        extra: dict[str, Any] = {"tracks": start.get("tracks"), "account_sid": start.get("accountSid")}
        # an outbound call's own parameters (gateway/outbound/twilio_originate.py)
        for key in ("direction", "tenant", "vars"):
            if params.get(key):
                extra[key] = params[key]
        # a warm transfer's coach leg / a caller back from one (gateway/handoff/twilio_warm.py): checked
        # there against the handoffs this gateway holds; the hop count as the X-AI-Hops header gives it
        for key in ("handoff_id", "handoff_return", "hops"):
            if params.get(key):
                extra[key] = params[key]
        conversation = params.get("ConversationSid")
        if conversation is not None:
            # A Twilio Conversation's SID as a <Parameter> of the <Stream>: the caller's memory key
            # (docs/records.md). Anything else is ignored with a warning: the call goes on, keyed by number.
            if _CONVERSATION_SID.fullmatch(conversation):
                extra["conversation_id"] = conversation
            else:
                log.warning("ignored customParameters.ConversationSid: not a Conversation SID (CH + 32 hex)",
                            extra=fields(call=call_sid, length=len(conversation)))
        return [StreamStart(call_id=call_sid, rate=8000, encoding="pcmu", caller=params.get("caller", ""),
                            callee=params.get("called", ""), profile=params.get("profile", ""),
                            stream_id=stream_sid, extra=extra)]

    def _media(self, msg: dict[str, Any]) -> list[InEvent]:
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "media without a payload")
        if len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
            raise StreamProtocolError(CLOSE_TOO_BIG, f"media payload over {MAX_MEDIA_BYTES} bytes")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "media payload is not base64") from None
        if media.get("track", "inbound") != "inbound":
            return []  # only the caller's audio goes to the model
        return [CallerAudio(audio)]

    def _dtmf(self, msg: dict[str, Any]) -> list[InEvent]:
        dtmf = msg.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or not _DIGIT.match(digit):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "dtmf without a valid digit")
        return [Dtmf(digit)]

    def _mark(self, msg: dict[str, Any]) -> list[InEvent]:
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise StreamProtocolError(CLOSE_INVALID_PAYLOAD, "mark without a name")
        return [MarkPlayed(name)]

    def _stop(self, msg: dict[str, Any]) -> list[InEvent]:
        return [StreamStopped("twilio stop")]

    def start_timeout(self) -> list[InEvent]:
        raise StreamProtocolError(CLOSE_PROTOCOL_ERROR, "no start message")

    # ------------------------------------------------------------------ out
    def agent_audio(self, audio: bytes) -> str:
        b64 = base64.b64encode(audio).decode("ascii")
        return f'{{"event":"media","streamSid":"{self.stream_sid}","media":{{"payload":"{b64}"}}}}'

    def clear(self) -> str | None:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})

    def mark(self, name: str) -> str | None:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def side_text(self, doc: dict[str, Any]) -> str | None:
        return None  # Twilio has no message for it


_INBOUND = {
    "media": TwilioMediaCodec._media,
    "dtmf": TwilioMediaCodec._dtmf,
    "mark": TwilioMediaCodec._mark,
    "stop": TwilioMediaCodec._stop,
}
