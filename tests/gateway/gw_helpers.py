"""Helpers shared by the gateway tests: caller audio, captured mod_audio_stream requests, a raw client.

(A module with its own name rather than conftest: `from conftest import ...` picks whichever area's
conftest was imported last when the whole suite runs.)"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import numpy as np

from gateway.client.wsframe import FrameParser, encode_frame

FIXTURES = Path("/work/shared/fixtures")


def tone(seconds: float, rate: int, *, freq: float = 300.0, level: float = 0.3, lead_silence: float = 0.0,
         tail_silence: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    body = (level * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return np.concatenate([np.zeros(int(lead_silence * rate), np.int16), body,
                           np.zeros(int(tail_silence * rate), np.int16)])


def fixture_request(name: str, uuid: str) -> bytes:
    """A captured upgrade request with its path pointed at our endpoint; every other byte as captured."""
    raw = (FIXTURES / f"{name}_upgrade_request.bin").read_bytes()
    return re.sub(rb"^GET /[^ ?]*", b"GET /stream/" + uuid.encode(), raw, count=1)


class RawStream:
    """A raw TCP client that writes exact bytes (as the module does) and reads the gateway's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = FrameParser()
        self.status: int | None = None

    @classmethod
    async def open(cls, port: int, request: bytes) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self = cls(reader, writer)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        self.status = int(head.split()[1])
        return self

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_until_close(self, wait_s: float = 5.0) -> tuple[int | None, bool, list[Any]]:
        """-> (close code from the gateway, whether the gateway closed TCP, frames before the close)."""
        frames: list[Any] = []
        code = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            except (TimeoutError, ConnectionError):
                break
            if not data:
                return code, True, frames
            for f in self.parser.feed(data):
                if f.opcode == 0x8 and code is None:
                    code = f.close_code
                    # answer like libwsc: echo the close, keep TCP open; the gateway must drop TCP
                    self.writer.write(encode_frame(0x8, f.payload[:2]))
                else:
                    frames.append(f)
        return code, False, frames

    def close(self) -> None:
        self.writer.transport.abort()
