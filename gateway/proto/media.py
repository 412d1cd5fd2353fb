"""Events every ingress codec produces (sans-I/O): the vocabulary of `gateway.call.transport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Encoding = Literal["l16", "pcmu"]


@dataclass(frozen=True)
class StreamStart:
    """The call as the ingress describes it when the stream starts."""

    call_id: str  # our key for the call: the FreeSWITCH channel uuid or Twilio's CallSid
    rate: int
    encoding: Encoding = "l16"
    caller: str = ""
    callee: str = ""
    sip_call_id: str = ""
    worker: str = ""  # FreeSWITCH worker id (call control); "" for Twilio
    profile: str = ""
    stream_id: str = ""  # Twilio's streamSid
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CallerAudio:
    """One caller frame. Not frozen: a frozen dataclass sets its field through object.__setattr__,
    ~1 us per frame, 50 times a second per call."""

    audio: bytes  # in the transport's encoding at its rate


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class MarkPlayed:
    """The far end has played everything up to the agent audio mark `name` (Twilio echoes marks)."""

    name: str


@dataclass(frozen=True)
class StreamText:
    """Free text from the far end (mod_audio_stream's `stop <text>`): logged, nothing else."""

    text: str


@dataclass(frozen=True)
class StreamStopped:
    """The far end says the stream is over (Twilio `stop`); a close does the same for any ingress."""

    reason: str = ""


InEvent = StreamStart | CallerAudio | Dtmf | MarkPlayed | StreamText | StreamStopped
