"""Minimal RFC 6455 client side, sans-I/O: the upgrade request exactly as libwsc writes it, masked frames
out, a frame parser in. Written for `gateway call` and the tests, which must put on the wire what
mod_audio_stream puts there (headers without a space after the colon, no extensions, Origin header).
The opcodes, the (un)masking XOR and the server's frame builder are shared with the gateway's raw media
stack (gateway/media_raw.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_SERVER_FRAME = 16 * 1024 * 1024


def upgrade_request(host: str, port: int, path: str, extra_headers: dict[str, str] | None = None,
                    key: str | None = None) -> tuple[bytes, str]:
    """libwsc's handshake as mod_audio_stream sends it (no space after header colons, an Origin header,
    no extensions; see tests/gateway's captured ws_*_upgrade_request.bin). Returns (bytes, key)."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host:{host}:{port}",
        "Upgrade:websocket",
        "Connection:upgrade",
        f"Sec-WebSocket-Key:{key}",
        "Sec-WebSocket-Version:13",
        f"Origin:http://{host}:{port}",
    ]
    lines += [f"{k}:{v}" for k, v in (extra_headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR with the repeating 4-byte key (masking and unmasking alike), done as one big-int operation:
    no per-byte Python loop (fast for 320-byte frames)."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame: header and payload in one buffer (one transport.write)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def encode_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True,
                 mask_key: bytes | None = None) -> bytes:
    if not mask and fin:
        return server_frame(opcode, payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return bytes(head) + key + unmask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True

    @property
    def close_code(self) -> int | None:
        if self.opcode == OP_CLOSE and len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0]
        return None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace") if self.opcode == OP_CLOSE else ""


class FrameError(Exception):
    pass


class FrameParser:
    """Feed bytes from the server; collect complete (reassembled) messages and control frames."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._frag_op = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return out
            if frame.opcode >= 0x8:
                out.append(frame)
            elif frame.opcode == OP_CONT:
                self._fragments.append(frame.payload)
                if frame.fin:
                    out.append(Frame(self._frag_op, b"".join(self._fragments)))
                    self._fragments = []
            elif not frame.fin:
                self._frag_op, self._fragments = frame.opcode, [frame.payload]
            else:
                out.append(frame)

    def _next(self) -> Frame | None:
        b = self._buf
        if len(b) < 2:
            return None
        fin, opcode, masked, n = bool(b[0] & 0x80), b[0] & 0x0F, bool(b[1] & 0x80), b[1] & 0x7F
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack_from("!H", b, 2)[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack_from("!Q", b, 2)[0], 10
        if n > MAX_SERVER_FRAME:
            raise FrameError(f"server frame of {n} bytes")
        if masked:  # servers must not mask (RFC 6455 §5.1); libwsc reports SERVER_MASKED
            raise FrameError("masked frame from server")
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos : pos + n])
        del b[: pos + n]
        return Frame(opcode, payload, fin)
