"""The raw media stack (GATEWAY_MEDIA_STACK=raw): after aiohttp has answered the upgrade with its 101, the
connection's bytes go to `RawWsTransport`, an `asyncio.Protocol` that frames RFC 6455 itself and is the
call's `MediaTransport`. Everything before the 101 (routes, auth, admission, tenant caps, the header
deadline, the handshake) stays aiohttp's (gateway/media_server.py).

Why: per frame, aiohttp's `WebSocketResponse.receive()` wakes the reader through a future and a task
switch, and every `send_str` is a coroutine with a drain. Here a complete frame goes through the codec
inside `data_received`, its events are queued and the call, when it waits, is woken once; each outbound
message is one `transport.write` of header + payload. Measured in docs/benchmarks.md.

Framing: hand-written (`FrameParser`, from the measured prototype `benchmarks/media_stack_raw.py`), not
`wsproto`: wsproto 1.3.2 parsed a masked 320-byte frame and built the text reply in 27-35 us against
4-7 us here (`benchmarks/ws_framing.py`), i.e. more than the whole per-frame cost it was to remove.
No extension is ever negotiated (aiohttp's WebSocketResponse is made with compress=False), so reserved
bits are a protocol error.

aiohttp internals this relies on, each pinned by tests/gateway/test_media_raw.py::test_aiohttp_internals:
- `RequestHandler._message_tail`: bytes that arrived after the upgrade request before the WebSocket parser
  was set (a client that sends its first frame with the request); taken here before the 101.
- `WebSocketResponse.prepare()` writes the 101 head at once (StreamResponse sends headers immediately)
  and only reads through `RequestHandler.set_parser`, which gets nothing once the transport's protocol
  is swapped (`transport.set_protocol`, public asyncio API).
- `RequestHandler.connection_lost(None)`, called with its `transport` attribute already None, detaches
  aiohttp from the socket without closing it (`force_close` closes only a transport it still holds):
  the connection leaves the server's list and its keep-alive timer ends. The response the handler then
  returns fails to write (no transport) with a ConnectionError, which `finish_response` swallows, so
  aiohttp never writes to or closes the socket again. The call runs in its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.call.transport import InEvent, MediaCodec, StreamEnded, StreamStart, read_start, stream_events
from gateway.client.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    server_frame,
    unmask,
)
from gateway.log import fields
from gateway.proto import audio_stream as wire
from gateway.proto.audio_stream import StreamProtocolError

log = logging.getLogger("gateway.media")

CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INVALID_DATA = 1007
DRAIN_TIMEOUT_S = 5.0  # a far end that reads none of the agent's audio this long is dropped
MAX_QUEUED_EVENTS = 256  # input events not yet taken by the call before the socket stops being read


class WsProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


class FrameParser:
    """Client-to-server frames out of a byte stream. `feed()` returns the complete messages
    [(opcode, payload)] (control frames as they come); after a violation it returns what came before it
    and sets `error` (the close code to send), and reads nothing more."""

    __slots__ = ("buf", "max_size", "frag_op", "frag", "error")

    def __init__(self, max_size: int) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.frag_op = 0
        self.frag: bytearray | None = None
        self.error: WsProtocolError | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        if self.error is not None:
            return out
        b = self.buf
        b += data
        try:
            self._parse(b, out)
        except WsProtocolError as exc:
            self.error = exc
            b.clear()
        return out

    def _parse(self, b: bytearray, out: list[tuple[int, bytes]]) -> None:
        pos = 0
        end = len(b)
        while end - pos >= 2:
            b0, b1 = b[pos], b[pos + 1]
            if not b1 & 0x80:
                raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, "unmasked client frame")
            if b0 & 0x70:
                raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension)")
            n = b1 & 0x7F
            hdr = 6
            if n == 126:
                if end - pos < 4:
                    break
                n = (b[pos + 2] << 8) | b[pos + 3]
                hdr = 8
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(b[pos + 2 : pos + 10], "big")
                hdr = 14
            op, fin = b0 & 0x0F, b0 & 0x80
            if op >= 0x8:
                if not fin or n > 125:
                    raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, "bad control frame")
            elif n + (len(self.frag) if self.frag is not None else 0) > self.max_size:
                # Refused on the header: the payload is never buffered.
                raise WsProtocolError(CLOSE_MESSAGE_TOO_BIG, f"message larger than {self.max_size} bytes")
            if end - pos < hdr + n:
                break
            payload = unmask(memoryview(b)[pos + hdr : pos + hdr + n], bytes(b[pos + hdr - 4 : pos + hdr]))
            pos += hdr + n
            if op >= 0x8:
                if op not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, f"reserved opcode {op:#x}")
                out.append((op, payload))
            elif op == OP_CONT:
                if self.frag is None:
                    raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, "continuation without a start")
                self.frag += payload
                if fin:
                    out.append((self.frag_op, bytes(self.frag)))
                    self.frag = None
            elif op in (OP_TEXT, OP_BINARY):
                if self.frag is not None:
                    raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if fin:
                    out.append((op, payload))
                else:
                    self.frag_op, self.frag = op, bytearray(payload)
            else:
                raise WsProtocolError(wire.CLOSE_PROTOCOL_ERROR, f"reserved opcode {op:#x}")
        if pos:
            del b[:pos]


class RawWsTransport(asyncio.Protocol):
    """One media WebSocket after its 101: the connection's asyncio protocol and the call's
    `MediaTransport` in one object. Input is framed and decoded in `data_received`; the call takes the
    queued events (one wake-up per batch, only when it was waiting)."""

    def __init__(self, transport: asyncio.Transport, codec: MediaCodec, max_msg_size: int,
                 close_timeout: float, call: str | None = None) -> None:
        self._transport = transport
        self.codec = codec
        self.codec_name = codec.name
        self.frame_ms = codec.frame_ms
        self.echoes_marks = codec.echoes_marks
        self.call = call
        self.close_timeout = close_timeout
        self.on_start: Callable[[StreamStart], None] | None = None
        self._parser = FrameParser(max_msg_size)
        self._loop = asyncio.get_running_loop()
        self._queue: deque[InEvent | StreamProtocolError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._open = False  # bytes before the 101 went out are kept until `open`
        self._early = bytearray()
        self._input_done = False  # nothing more will be read: close frame, EOF, reset or an error
        self._broken = False  # the framing broke: input is dropped, the close reply cannot be read
        self._close_sent = False
        self._peer_closed = False
        self._peer_code = wire.CLOSE_NORMAL
        self._lost = False
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._close_reply: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol side
    def open(self, tail: bytes) -> None:
        """The 101 is on the wire: frame what came before now (`tail`, then what arrived meanwhile)."""
        self._open = True
        early, self._early = bytes(tail) + bytes(self._early), bytearray()
        if early and not self._lost:
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        if not self._open:
            self._early += data
            return
        if self._input_done:
            if not (self._broken or self._peer_closed):  # a refused stream: only its close reply matters
                for op, payload in self._parser.feed(data):
                    if op == OP_CLOSE:
                        self._on_close_frame(payload)
                        break
            return
        parser = self._parser
        frames = parser.feed(data)
        codec = self.codec
        queue = self._queue
        try:
            for op, payload in frames:
                if op == OP_BINARY:
                    queue.extend(codec.feed_binary(payload))
                elif op == OP_TEXT:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        raise StreamProtocolError(CLOSE_INVALID_DATA, "bad frame: text not UTF-8") from None
                    queue.extend(codec.feed_text(text))
                elif op == OP_PING:
                    if not self._close_sent:
                        self._transport.write(server_frame(OP_PONG, payload))
                elif op == OP_CLOSE:
                    self._on_close_frame(payload)
                    break
        except StreamProtocolError as exc:  # the codec refused the stream: the call closes it
            queue.append(exc)
            self._input_done = True
        if parser.error is not None and not self._input_done:  # the framing broke: nothing more is read
            err = parser.error
            queue.append(StreamProtocolError(err.code, f"bad frame: {err.reason}"))
            self._input_done = self._broken = True
        if len(queue) > MAX_QUEUED_EVENTS and not self._read_paused and not self._input_done:
            self._read_paused = True
            self._transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (queue or self._input_done):
            waiter.set_result(None)

    def _on_close_frame(self, payload: bytes) -> None:
        self._input_done = self._peer_closed = True
        if self._close_reply is not None and not self._close_reply.done():
            self._close_reply.set_result(None)  # the reply to our close: finish() drops TCP
            return
        if not self._close_sent:
            # The far end closes first: the echo of its code and the end of TCP come from `finish()`,
            # once the call has ended and its slots are free (as with aiohttp, whose reply comes from
            # the ending call), and in any case `close_timeout` from now (FreeSWITCH waits for them).
            self._peer_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else wire.CLOSE_NORMAL
            self._loop.call_later(self.close_timeout, self.finish)

    def eof_received(self) -> bool | None:
        self._end_input()
        if self._close_reply is not None and not self._close_reply.done():
            self._close_reply.set_result(None)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._end_input()
        for fut in (self._drain, self._close_reply):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _end_input(self) -> None:
        self._input_done = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ------------------------------------------------------------------ MediaTransport side
    @property
    def closed(self) -> bool:
        return self._close_sent or self._lost or self._peer_closed

    async def _next(self, timeout: float | None = None) -> list[InEvent]:  # noqa: ASYNC109
        queue = self._queue
        while not queue:
            if self._input_done:
                raise StreamEnded()
            if self._read_paused:
                self._read_paused = False
                self._transport.resume_reading()
            self._waiter = waiter = self._loop.create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, timeout)
            finally:
                self._waiter = None
        first = queue[0]
        if isinstance(first, StreamProtocolError):
            queue.clear()
            raise first
        batch: list[InEvent] = []
        while queue and not isinstance(queue[0], StreamProtocolError):
            batch.append(queue.popleft())  # type: ignore[arg-type]
        if self._read_paused and not queue:
            self._read_paused = False
            self._transport.resume_reading()
        return batch

    async def start(self, timeout: float) -> StreamStart:  # noqa: ASYNC109 - the ingress's deadline
        start, rest = await read_start(self._next, self.codec, timeout)
        self._queue.extendleft(reversed(rest))
        if self.on_start is not None:
            self.on_start(start)
        return start

    def events(self) -> AsyncIterator[InEvent]:
        return stream_events(self._next)

    def _write(self, text: str | None) -> bool:
        if text is None or self._close_sent or self._peer_closed or self._lost:
            return False
        self._transport.write(server_frame(OP_TEXT, text.encode()))
        return True

    async def send_audio(self, audio: bytes) -> bool:
        if not self._write(self.codec.agent_audio(audio)):
            return False
        if self._write_paused:
            if self._drain is None or self._drain.done():
                self._drain = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drain), DRAIN_TIMEOUT_S)
            except TimeoutError:
                log.warning("media peer reads nothing: connection dropped",
                            extra=fields(call=self.call, timeout_s=DRAIN_TIMEOUT_S))
                self._transport.abort()
                return False
        return not self._lost

    async def clear(self) -> None:
        self._write(self.codec.clear())

    async def mark(self, name: str) -> None:
        self._write(self.codec.mark(name))

    async def send_side_text(self, doc: dict[str, Any]) -> None:
        self._write(self.codec.side_text(doc))

    async def close(self, code: int, reason: str) -> None:
        """Close frame, then the far end's reply (bounded by `close_timeout`). TCP is dropped by `finish()`,
        which the call's owner calls once the call's slots are free (as aiohttp drops it when its handler
        returns), and in any case `close_timeout` later: a close frame with TCP left open blocks
        FreeSWITCH's channel teardown (libwsc never closes TCP itself)."""
        if self._lost or self._peer_closed:  # the far end closed first: `finish()` answers it
            return
        if not self._close_sent:
            self._close_sent = True
            self._transport.write(close_frame(code, reason))
            # Then the reply is awaited, also after a protocol error (`_broken`: input is read and
            # dropped and only the far end's EOF ends the wait): closing a socket with unread input
            # resets it, and a reset can take our close frame, and its code, with it.
            self._close_reply = self._loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._close_reply), self.close_timeout)
            self._loop.call_later(self.close_timeout, self.finish)

    def finish(self) -> None:
        """Drop TCP now: gracefully after a completed close handshake, else reset (no waiting on a full
        buffer of a far end that reads nothing)."""
        if self._lost:
            return
        if self._peer_closed and not self._close_sent:
            self._close_sent = True
            self._transport.write(close_frame(self._peer_code))
        reply = self._close_reply
        if self._peer_closed or (reply is not None and reply.done()):
            self._transport.close()
        else:
            self._transport.abort()
