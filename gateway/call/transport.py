"""The media transport seam: what every ingress turns its wire messages into, and back.

An ingress is a pure codec (`MediaCodec`, in `gateway/proto/`) plus a route. The codec turns the
socket's messages into the events below and builds the messages for agent audio, `clear` and `mark`;
the WebSocket adapter (`gateway/media_server.py`) only moves those messages. `CallSession` sees
nothing but these events and the `MediaTransport` verbs, so it holds no socket and imports no web
framework.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from gateway.proto.audio_stream import CLOSE_NORMAL, StreamProtocolError
from gateway.proto.media import (
    CallerAudio,
    Dtmf,
    InEvent,
    MarkPlayed,
    StreamStart,
    StreamStopped,
    StreamText,
)

__all__ = ["CallerAudio", "Dtmf", "InEvent", "MarkPlayed", "MediaCodec", "MediaTransport", "StreamEnded",
           "StreamStart", "StreamStopped", "StreamText", "read_start", "stream_events"]


class MediaCodec(Protocol):
    """Pure per-call codec of one ingress: messages in -> events; agent audio/clear/mark -> messages.
    Refusals raise `gateway.proto.audio_stream.StreamProtocolError` carrying the close code."""

    name: str  # "freeswitch", "twilio": metrics and logs
    frame_ms: int  # agent audio per outbound message when paced in real time
    echoes_marks: bool  # the far end confirms what it played (Twilio): the heard point comes from it

    def feed_text(self, text: str) -> list[InEvent]: ...
    def feed_binary(self, data: bytes) -> list[InEvent]: ...
    def start_timeout(self) -> list[InEvent]:
        """No start within the deadline: a default start (with any early audio) or a refusal."""
        ...
    def agent_audio(self, audio: bytes) -> str: ...
    def clear(self) -> str | None: ...
    def mark(self, name: str) -> str | None: ...
    def side_text(self, doc: dict[str, Any]) -> str | None:
        """Transcripts for the far end's own logs, if the ingress has a place for them."""
        ...


class MediaTransport(Protocol):
    """The socket side of one call, as the call sees it."""

    codec_name: str
    frame_ms: int
    echoes_marks: bool

    @property
    def closed(self) -> bool: ...
    async def start(self, timeout: float) -> StreamStart: ...  # noqa: ASYNC109 - the ingress's deadline
    def events(self) -> AsyncIterator[InEvent]: ...
    async def send_audio(self, audio: bytes) -> bool: ...  # False when the far end is gone
    async def clear(self) -> None: ...
    async def mark(self, name: str) -> None: ...
    async def send_side_text(self, doc: dict[str, Any]) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class StreamEnded(Exception):
    """The far end closed the stream (close frame or TCP EOF): raised by a socket adapter's reads."""


async def read_start(next_events: Callable[[float], Awaitable[list[InEvent]]], codec: MediaCodec,
                     timeout: float) -> tuple[StreamStart, list[InEvent]]:  # noqa: ASYNC109 - the deadline
    """The stream's start, read through `next_events(remaining seconds)` within `timeout`; past it, the
    codec's default start (or its refusal). Returns the start and the events that came after it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    events: list[InEvent] = []
    while not any(isinstance(e, StreamStart) for e in events):
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            events += await next_events(remaining)
        except TimeoutError:
            events += codec.start_timeout()
        except StreamEnded:
            raise StreamProtocolError(CLOSE_NORMAL, "stream closed before it started") from None
    i = next(i for i, e in enumerate(events) if isinstance(e, StreamStart))
    start = events[i]
    assert isinstance(start, StreamStart)
    return start, events[i + 1:]


async def stream_events(next_events: Callable[[], Awaitable[list[InEvent]]],
                        first: list[InEvent] | None = None) -> AsyncIterator[InEvent]:
    """`first` (what came with the start), then every batch `next_events()` reads, until the stream ends."""
    for event in first or ():
        yield event
    while True:
        try:
            batch = await next_events()
        except StreamEnded:
            return
        for event in batch:
            yield event
