"""Prototype measurement: a media server on a raw asyncio.Protocol (uvloop) with a minimal sans-I/O
RFC 6455 server framing, against an aiohttp server doing the same reply. Measurement only: nothing here is
used by the gateway.

    .venv/bin/python benchmarks/media_stack_raw.py                      # self-check + 300 and 500 (~1 min)
    .venv/bin/python benchmarks/media_stack_raw.py --calls 500 --stacks raw --json /tmp/r.json

Both servers answer every caller binary frame (masked 320-byte L16, as mod_audio_stream sends) with one text
frame: the gateway's own `build_stream_audio` of the same 320 bytes (base64 inside the streamAudio JSON).
The load client, CPU sampling and pinning (server on core 0, client on core 1, taskset) are imported from
`benchmarks/media_plane.py`, so the figures are comparable with its stack table.

The raw server hands each complete frame synchronously to a per-connection handler from data_received: no
per-message future or task wake-up as in aiohttp's `receive()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import media_plane as mp  # noqa: E402  (sibling benchmark: its load client and run_load)

PY = sys.executable
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_FRAME = 64 * 1024  # mod_audio_stream sends 20 ms frames; anything this large is refused (1009)
MAX_HEAD = 8 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --------------------------------------------------------------------------------------------- sans-I/O core
class WsProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def unmask_int(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR with the 4-byte key through one big int (no per-byte Python loop)."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def unmask_numpy(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    import numpy as np

    n = len(payload)
    key = np.frombuffer((mask * ((n >> 2) + 1))[:n], dtype=np.uint8)
    return (np.frombuffer(payload, dtype=np.uint8) ^ key).tobytes()


def parse_upgrade(head: bytes) -> tuple[str, bytes]:
    """Request line + headers (no body) -> (path, 101 response). libwsc writes `Name:value` with no space."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[2].startswith(b"HTTP/1.1"):
        raise WsProtocolError(400, "not an HTTP/1.1 GET")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise WsProtocolError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"upgrade", b"").lower() != b"websocket" or b"upgrade" not in headers.get(
            b"connection", b"").lower():
        raise WsProtocolError(400, "not a WebSocket upgrade")
    if headers.get(b"sec-websocket-version") != b"13":
        raise WsProtocolError(426, "unsupported WebSocket version")
    key = headers.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise WsProtocolError(400, "bad Sec-WebSocket-Key") from None
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    return parts[1].decode("latin-1"), resp


def server_frame(opcode: int, payload: bytes) -> bytes:
    """Unmasked, unfragmented server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return server_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()[:120])


class FrameParser:
    """Client-to-server frames out of a byte stream. feed() returns the complete messages
    [(opcode, payload)]; control frames are returned as they come; a protocol violation raises
    WsProtocolError with the close code to send."""

    def __init__(self, unmask: Callable[[bytes | bytearray | memoryview, bytes], bytes] = unmask_int) -> None:
        self.buf = bytearray()
        self.unmask = unmask
        self.frag_op = 0
        self.frag: bytearray | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        b = self.buf
        b += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(b)
        while end - pos >= 2:
            b0, b1 = b[pos], b[pos + 1]
            if not b1 & 0x80:
                raise WsProtocolError(1002, "unmasked client frame")
            if b0 & 0x70:
                raise WsProtocolError(1002, "reserved bits set (no extension negotiated)")
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
            if n > MAX_FRAME:
                raise WsProtocolError(1009, "frame too large")
            if end - pos < hdr + n:
                break
            mask = bytes(b[pos + hdr - 4 : pos + hdr])
            payload = self.unmask(memoryview(b)[pos + hdr : pos + hdr + n], mask)
            pos += hdr + n
            op, fin = b0 & 0x0F, b0 & 0x80
            if op >= 0x8:
                if not fin or n > 125:
                    raise WsProtocolError(1002, "bad control frame")
                out.append((op, payload))
            elif op == OP_CONT:
                if self.frag is None:
                    raise WsProtocolError(1002, "continuation without a start")
                self.frag += payload
                if len(self.frag) > MAX_FRAME:
                    raise WsProtocolError(1009, "message too large")
                if fin:
                    out.append((self.frag_op, bytes(self.frag)))
                    self.frag = None
            elif op in (OP_TEXT, OP_BINARY):
                if self.frag is not None:
                    raise WsProtocolError(1002, "new message inside a fragmented one")
                if fin:
                    out.append((op, payload))
                else:
                    self.frag_op, self.frag = op, bytearray(payload)
            else:
                raise WsProtocolError(1002, "reserved opcode")
        if pos:
            del b[:pos]
        return out


# --------------------------------------------------------------------------------------------- raw server
class RawWsServer(asyncio.Protocol):
    """One connection. on_binary(payload) -> reply bytes (a text frame payload) or None; called inline."""

    def __init__(self, on_binary: Callable[[bytes], bytes | None],
                 unmask: Callable[[bytes | bytearray | memoryview, bytes], bytes] = unmask_int) -> None:
        self.on_binary = on_binary
        self.parser = FrameParser(unmask)
        self.head = bytearray()
        self.upgraded = False
        self.closing = False
        self.transport: asyncio.Transport | None = None
        self.path = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        t = self.transport
        assert t is not None
        if self.closing:
            return
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self._http_refuse(431, "request head too large")
                return
            try:
                self.path, resp = parse_upgrade(bytes(self.head[:end]))
            except WsProtocolError as exc:
                self._http_refuse(exc.code, str(exc))
                return
            t.write(resp)
            self.upgraded = True
            data = bytes(self.head[end + 4 :])
            self.head = bytearray()
            if not data:
                return
        try:
            frames = self.parser.feed(data)
        except WsProtocolError as exc:
            self._close(exc.code, str(exc))
            return
        for op, payload in frames:
            if op == OP_BINARY:
                reply = self.on_binary(payload)
                if reply is not None:
                    t.write(server_frame(OP_TEXT, reply))
            elif op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                self._close(code if 1000 <= code < 5000 and code not in (1004, 1005, 1006, 1015) else 1002,
                            "")
                return
            elif op == OP_PING:
                t.write(server_frame(OP_PONG, payload))
            # OP_TEXT (the metadata message) and OP_PONG: nothing to answer in the echo prototype

    def _http_refuse(self, status: int, reason: str) -> None:
        assert self.transport is not None
        body = reason.encode()
        self.transport.write(f"HTTP/1.1 {status} Refused\r\nContent-Length: {len(body)}\r\n"
                             f"Connection: close\r\n\r\n".encode() + body)
        self.closing = True
        self.transport.close()

    def _close(self, code: int, reason: str) -> None:
        # Server side of the close handshake: send Close, then close TCP (RFC 6455 7.1.1: the server
        # closes the TCP connection first). write() is buffered, close() flushes before closing.
        assert self.transport is not None
        self.transport.write(close_frame(code, reason))
        self.closing = True
        self.transport.close()


def echo_reply(payload: bytes) -> bytes:
    from gateway.proto.audio_stream import build_stream_audio

    return build_stream_audio(payload, 8000).encode()


def _serve(stack: str, port: int, unmask_name: str = "int") -> None:
    import uvloop

    from gateway.proto.audio_stream import build_stream_audio

    if stack == "raw":
        unmask = unmask_numpy if unmask_name == "numpy" else unmask_int

        def on_binary(payload: bytes) -> bytes:
            return build_stream_audio(payload, 8000).encode()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: RawWsServer(on_binary, unmask), "127.0.0.1", port,
                                              backlog=1024)
            async with server:
                await server.serve_forever()

        uvloop.run(main())
    else:
        from aiohttp import WSMsgType, web

        async def h(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_str(build_stream_audio(msg.data, 8000))
            return ws

        app = web.Application()
        app.router.add_get("/{tail:.*}", h)
        uvloop.install()
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


# --------------------------------------------------------------------------------------------- self-check
def self_check() -> list[str]:
    """Framing over a real loopback socket against the raw server in this process. Returns the checks."""
    import uvloop

    from gateway.client.wsframe import OP_BINARY as C_BIN
    from gateway.client.wsframe import encode_frame, upgrade_request

    done: list[str] = []
    pcm1, pcm2, pcm3 = bytes(range(256)) + bytes(64), b"\x01\x02" * 160, b"\xfe\xff" * 160

    # Parser alone, one byte per feed and two frames per feed, with a random-looking mask.
    p = FrameParser()
    f1 = encode_frame(C_BIN, pcm1, mask_key=b"\x9a\x01\xff\x3c")
    got = [m for i in range(len(f1)) for m in p.feed(f1[i : i + 1])]
    assert got == [(OP_BINARY, pcm1)], "byte-at-a-time feed"
    assert FrameParser(unmask_numpy).feed(f1 + f1) == [(OP_BINARY, pcm1)] * 2, "numpy unmask"
    done.append("parser: one byte per read, two frames per read, int and numpy unmask agree")

    async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
        h = await asyncio.wait_for(r.readexactly(2), 5)
        assert not h[1] & 0x80, "server frames must be unmasked"
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await r.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await r.readexactly(8), "big")
        return h[0] & 0x0F, await r.readexactly(n)

    async def upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        req, key = upgrade_request("127.0.0.1", port, "/stream/selfcheck")
        assert b"Upgrade:websocket" in req or b"upgrade:websocket" in req.lower(), "libwsc header style"
        w.write(req)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()) in head, "accept key"
        return r, w

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: RawWsServer(echo_reply), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await upgrade(port)
        # 1. one frame split across two TCP writes (two reads on the server)
        f = encode_frame(C_BIN, pcm1, mask_key=b"\x11\x22\x33\x44")
        w.write(f[:7])
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(f[7:])
        assert await read_frame(r) == (OP_TEXT, echo_reply(pcm1)), "split frame"
        done.append("server: frame split across two reads -> one correct streamAudio text frame")
        # 2. two frames (and the head of a third) in one write
        f2 = encode_frame(C_BIN, pcm2, mask_key=b"\xde\xad\xbe\xef")
        f3 = encode_frame(C_BIN, pcm3, mask_key=b"\x00\x10\x20\x30")
        w.write(f2 + f3 + f[:3])
        await asyncio.sleep(0.05)
        w.write(f[3:])
        assert await read_frame(r) == (OP_TEXT, echo_reply(pcm2)), "first of two"
        assert await read_frame(r) == (OP_TEXT, echo_reply(pcm3)), "second of two"
        assert await read_frame(r) == (OP_TEXT, echo_reply(pcm1)), "third, split"
        done.append("server: two frames in one read (+ a split third) -> three replies in order")
        # 3. close handshake: client Close 1000 -> server Close 1000, then server closes TCP
        w.write(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        op, payload = await read_frame(r)
        assert (op, payload[:2]) == (OP_CLOSE, (1000).to_bytes(2, "big")), (op, payload)
        assert await asyncio.wait_for(r.read(), 5) == b"", "server closes TCP after Close"
        w.close()
        done.append("server: close handshake 1000 echoed, then TCP closed by the server")
        # 4. unmasked client frame -> Close 1002, TCP closed
        r, w = await upgrade(port)
        w.write(encode_frame(C_BIN, pcm2, mask=False))
        op, payload = await read_frame(r)
        assert (op, payload[:2]) == (OP_CLOSE, (1002).to_bytes(2, "big")), (op, payload)
        assert await asyncio.wait_for(r.read(), 5) == b"", "TCP closed after 1002"
        w.close()
        done.append("server: unmasked client frame refused with Close 1002, then TCP closed")
        # 5. not a WebSocket upgrade -> HTTP 400, other connections unaffected
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET / HTTP/1.1\r\nHost:x\r\n\r\n")
        assert (await asyncio.wait_for(r2.read(), 5)).startswith(b"HTTP/1.1 400"), "plain GET refused"
        w2.close()
        done.append("server: plain HTTP GET refused with 400")
        server.close()
        await server.wait_closed()

    uvloop.run(main())
    return done


def unmask_cost() -> dict[str, float]:
    import timeit

    payload, mask = os.urandom(320), b"\x11\x22\x33\x44"
    out = {}
    for name, fn in (("int.from_bytes XOR", unmask_int), ("numpy", unmask_numpy)):
        out[name] = round(min(timeit.repeat(lambda f=fn: f(payload, mask), number=20000, repeat=5)) / 20000
                          * 1e6, 2)
    return out


# --------------------------------------------------------------------------------------------- orchestration
def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "int")
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, nargs="+", default=[300, 500])
    p.add_argument("--stacks", nargs="+", default=["raw", "aiohttp"], choices=["raw", "aiohttp"])
    p.add_argument("--unmask", choices=["int", "numpy"], default="int")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json", default="/tmp/media_stack_raw.json")
    args = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    if os.geteuid() == 0:
        mp.NICE[:] = ["nice", "-n", "-10"]
    checks = self_check()
    print("self-check passed:")
    for c in checks:
        print(f"  {c}")
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "command": " ".join([Path(PY).name, *sys.argv]), "nice": mp.NICE,
                     "loadavg_start": os.getloadavg(), "self_check": checks, "unmask_us_320": unmask_cost(),
                     "runs": []}
    print(f"unmask 320 bytes (us): {results['unmask_us_320']}")
    reply_len = len(server_frame(OP_TEXT, echo_reply(bytes(mp.FRAME))))
    for calls in args.calls:
        for stack in args.stacks:
            port = mp.free_port()
            r = mp.run_load([PY, __file__, "--serve", stack, str(port), args.unmask], dict(os.environ), port,
                            calls, args.warmup, args.seconds, "/stream/")
            frames = r["frames_sent"]
            cpu_s = r["server_cpu_pct"] / 100 * args.seconds
            timed = min(calls, mp.TIMED_CALLS)
            # Replies expected in the window: timed calls are counted frame by frame; the others by bytes.
            expect_other = frames - r["frames_sent_timed_calls"]
            got = r["frames_received_timed_calls"] + r["bytes_received_other_calls"] // reply_len
            r.update({"stack": stack, "unmask": args.unmask if stack == "raw" else "aiohttp",
                      "timed_calls": timed,
                      "cpu_us_per_frame_pair": round(cpu_s / frames * 1e6, 1),
                      "projected_cpu_pct_500_calls": round(cpu_s / frames * 25000 * 100, 1),
                      "replies_received": got, "frames_lost": frames - got,
                      "frames_lost_timed_calls": r["frames_sent_timed_calls"]
                      - r["frames_received_timed_calls"],
                      "expected_replies_other_calls": expect_other})
            results["runs"].append(r)
            print(f"{stack:>8} {calls} calls: server {r['server_cpu_pct']} % of a core, "
                  f"{r['cpu_us_per_frame_pair']} us/pair, inter-arrival p50 {r['interarrival_ms']['p50']} "
                  f"p99 {r['interarrival_ms']['p99']} ms, sent {frames}, lost {r['frames_lost']} "
                  f"(load {r['loadavg_1m']:.2f})", flush=True)
    results["loadavg_end"] = os.getloadavg()
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
