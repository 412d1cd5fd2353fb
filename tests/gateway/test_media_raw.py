"""GATEWAY_MEDIA_STACK=raw (gateway/media_raw.py): the frame parser, the aiohttp internals the hand-over
after the 101 relies on, and on the real wire for both stacks: pings, the close handshake against a peer
that never answers, an oversize frame (1009, one log line), a peer that stops reading."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import uuid as uuidlib

import pytest
from aiohttp import web_protocol
from gw_helpers import FIXTURES, RawStream, fixture_request

from gateway import media_raw
from gateway.client.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, encode_frame
from gateway.media_raw import FrameParser as ServerParser
from gateway.media_raw import RawWsTransport, WsProtocolError, server_frame
from gateway.proto.audio_stream import AudioStreamCodec, max_frame_bytes

STACKS = pytest.mark.parametrize("media_stack", ["aiohttp", "raw"])  # GATEWAY_MEDIA_STACK


def silence16k() -> bytes:
    return encode_frame(OP_BINARY, bytes(640))


def metadata16k() -> bytes:
    return (FIXTURES / "ws_voxcom_mono16k_first_text_frame.bin").read_bytes()


# ------------------------------------------------------------------------------------------ frame parser
def test_parser_reassembles_fragments_and_survives_byte_by_byte_input():
    p = ServerParser(1000)
    data = (encode_frame(OP_TEXT, b"hel", fin=False) + encode_frame(OP_PING, b"p")
            + encode_frame(0x0, b"lo", fin=True) + encode_frame(OP_BINARY, os.urandom(300)))
    out = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert [(op, len(x)) for op, x in out] == [(OP_PING, 1), (OP_TEXT, 5), (OP_BINARY, 300)]
    assert out[1][1] == b"hello" and p.error is None


@pytest.mark.parametrize("frame, code", [
    (encode_frame(OP_BINARY, b"x", mask=False), 1002),  # clients must mask
    (bytes([0x80 | 0x40 | OP_BINARY]) + encode_frame(OP_BINARY, b"x")[1:], 1002),  # RSV1 without extension
    (encode_frame(0x3, b"x"), 1002),  # reserved opcode
    (encode_frame(OP_PING, b"x", fin=False), 1002),  # fragmented control frame
    (encode_frame(0x0, b"x"), 1002),  # continuation without a start
    (encode_frame(OP_BINARY, bytes(1001)), 1009),
])
def test_parser_refuses_violations_with_their_close_code(frame, code):
    p = ServerParser(1000)
    good = encode_frame(OP_BINARY, b"ok")
    assert p.feed(good + frame + good) == [(OP_BINARY, b"ok")]  # what came before the error is kept
    assert isinstance(p.error, WsProtocolError) and p.error.code == code
    assert p.feed(good) == []  # nothing is read after a violation


def test_parser_refuses_oversize_on_the_header_without_buffering_the_payload():
    p = ServerParser(1000)
    head = bytes([0x80 | OP_BINARY, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + os.urandom(4)
    assert p.feed(head) == [] and p.error is not None and p.error.code == 1009
    p = ServerParser(1000)  # a fragmented message growing past the limit
    p.feed(encode_frame(OP_BINARY, bytes(600), fin=False))
    assert p.feed(encode_frame(0x0, bytes(600))) == [] and p.error is not None and p.error.code == 1009


def test_server_frames_are_one_unmasked_buffer_of_any_length():
    for n in (0, 125, 126, 65535, 65536):
        frames = FrameParser().feed(server_frame(OP_TEXT, b"a" * n))
        assert [(f.opcode, len(f.payload)) for f in frames] == [(OP_TEXT, n)]


# ------------------------------------------------------------------------------------------ aiohttp hand-over
async def test_aiohttp_internals(make_gateway, fake_model):
    """What gateway/media_raw.py relies on in aiohttp (fails if an aiohttp upgrade changes it): a first frame
    and a ping sent in the same write as the upgrade request (aiohttp's `_message_tail`) reach the raw
    stack in order after the 101; aiohttp lets go of the connection (off its server's list) and writes
    nothing after the 101 (every byte that follows parses as server frames)."""
    assert "_message_tail" in web_protocol.RequestHandler.__slots__
    model = await fake_model(greeting_ms=300, speed=4.0)
    gw = await make_gateway(model_url=model.url, media_stack="raw")
    call_uuid = str(uuidlib.uuid4())
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.media_port)
    request = fixture_request("ws_voxcom_mono16k", call_uuid)
    writer.write(request + metadata16k() + encode_frame(OP_PING, b"early") + silence16k() * 3)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    parser = FrameParser()
    frames = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not any(f.opcode == OP_TEXT for f in frames) and loop.time() < deadline:
        frames += parser.feed(await asyncio.wait_for(reader.read(65536), 5))
    assert frames[0].opcode == OP_PONG and frames[0].payload == b"early"
    assert any(f.opcode == OP_TEXT and b'"streamAudio"' in f.payload for f in frames)  # the greeting
    session = gw.calls[call_uuid]
    assert session.rate == 16000 and session.meta.extra == {"fixture": "mono16k"}
    server = gw._runner.server
    assert server is not None and server.connections == []  # aiohttp holds no connection
    writer.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000)))
    rest = await asyncio.wait_for(reader.read(), 5)  # up to the gateway dropping TCP
    tail = parser.feed(rest)  # raises on anything but frames
    assert tail and tail[-1].opcode == OP_CLOSE and tail[-1].close_code == 1000
    writer.close()


# ------------------------------------------------------------------------------------------ on the wire
@STACKS
async def test_ping_is_answered_during_a_call(make_gateway, fake_model):
    model = await fake_model(greeting_ms=3000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    raw = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_mono16k", str(uuidlib.uuid4())))
    assert raw.status == 101
    raw.write(metadata16k() + silence16k())
    await asyncio.sleep(0.2)
    raw.write(encode_frame(OP_PING, b"are you there"))
    pongs = []
    for _ in range(50):
        pongs += [f for f in raw.parser.feed(await asyncio.wait_for(raw.reader.read(65536), 5))
                  if f.opcode == OP_PONG]
        if pongs:
            break
    assert [p.payload for p in pongs] == [b"are you there"]
    raw.close()


@STACKS
async def test_gateway_close_drops_tcp_when_the_peer_never_answers(make_gateway, fake_model, media_stack):
    """The gateway ends a call (shutdown, 1001); the peer neither answers the close nor closes TCP (a hung
    worker): TCP is dropped by the gateway within the close handshake timeout."""
    model = await fake_model(greeting_ms=5000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    raw = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_mono16k", str(uuidlib.uuid4())))
    raw.write(metadata16k() + silence16k())
    await asyncio.sleep(0.3)
    loop = asyncio.get_running_loop()
    shutdown = asyncio.create_task(gw.shutdown(drain_timeout=0.1))
    code, t_close, t_eof = None, None, None
    while True:
        data = await asyncio.wait_for(raw.reader.read(65536), 10)
        if not data:
            t_eof = loop.time()
            break
        for f in raw.parser.feed(data):
            if f.opcode == OP_CLOSE and code is None:
                code, t_close = f.close_code, loop.time()
    await shutdown
    assert code == 1001
    assert t_close is not None and t_eof is not None and t_eof - t_close < 3.0
    raw.close()


@STACKS
async def test_oversize_frame_is_refused_with_1009_and_one_log_line(make_gateway, fake_model, caplog):
    model = await fake_model(greeting_ms=2000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    raw = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_mono16k", call_uuid))
    raw.write(metadata16k() + silence16k())
    await asyncio.sleep(0.2)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        raw.write(encode_frame(OP_BINARY, bytes(max_frame_bytes() + 1000)))
        code, tcp_closed, _ = await raw.read_until_close()
        await asyncio.sleep(0.1)
    assert code == 1009 and tcp_closed
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    assert refusals[0].getMessage() == "stream refused" and refusals[0].fields["close_code"] == 1009
    assert refusals[0].fields["call"] == call_uuid


async def test_a_peer_that_stops_reading_is_dropped_after_a_bounded_wait(monkeypatch):
    """send_audio waits for the socket to drain (pause_writing), no longer than DRAIN_TIMEOUT_S."""
    monkeypatch.setattr(media_raw, "DRAIN_TIMEOUT_S", 0.3)
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    codec = AudioStreamCodec(str(uuidlib.uuid4()), default_rate=8000, query_rate=None)
    raw = RawWsTransport(transport, codec, max_msg_size=1 << 20, close_timeout=0.5)
    transport.set_protocol(raw)
    raw.open(b"")
    t0 = loop.time()
    results = []
    for _ in range(200):  # 64 KB of audio each: the kernel buffers fill, then the transport's
        ok = await raw.send_audio(bytes(64000))
        results.append(ok)
        if not ok:
            break
    assert results[-1] is False  # the far end never read: dropped, after waiting DRAIN_TIMEOUT_S
    assert 0.3 <= loop.time() - t0 < 5.0
    await asyncio.sleep(0.05)
    assert raw.closed and transport.is_closing()
    theirs.close()
