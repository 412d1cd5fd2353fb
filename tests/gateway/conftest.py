"""Fixtures for the gateway tests: a real `gateway serve` (in-process, random loopback ports) in front
of a scripted Realtime-protocol server, caller audio from espeak-ng, raw mod_audio_stream bytes."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

# pytest puts tests/ on sys.path (rootdir conftest, no __init__.py), where this folder, tests/gateway/,
# would be found as a namespace package `gateway` before the editable install's finder runs. Put the
# repository root first and forget a namespace `gateway` imported by mistake.
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("gateway"), "__file__", "") is None:
    for _name in [n for n in sys.modules if n == "gateway" or n.startswith("gateway.")]:
        del sys.modules[_name]
# ruff: isort: off
from collections.abc import AsyncIterator, Callable  # noqa: E402
from typing import Any  # noqa: E402

# Imported early: hypothesis's lazy import at the terminal summary trips a CPython 3.11.7 ast bug
# ("AST constructor recursion depth mismatch") after the socket tests.
import hypothesis  # noqa: E402, F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from realtime_fake import FakeRealtime, Script  # noqa: E402

from gateway.client.wsframe import FrameParser  # noqa: E402
from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import DEFAULT_PROFILES_DIR, Settings  # noqa: E402

FIXTURES = Path("/work/shared/fixtures")
TOKENS = "abc,rotated-token"  # "abc" is the token inside the captured ws_*_mono16k upgrade requests


@pytest.fixture(scope="session")
def fallback_prompts() -> FallbackPrompts:
    return FallbackPrompts(load_profiles(DEFAULT_PROFILES_DIR, "front-desk"))


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the caller says, synthesised offline (espeak-ng writes 22.05 kHz WAV)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (requirements/apt.txt)")
    path = tmp_path_factory.mktemp("audio") / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "what are your opening hours"], check=True, timeout=30)
    return path


def tone(seconds: float, rate: int, *, freq: float = 300.0, level: float = 0.3, lead_silence: float = 0.0,
         tail_silence: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    body = (level * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return np.concatenate([np.zeros(int(lead_silence * rate), np.int16), body,
                           np.zeros(int(tail_silence * rate), np.int16)])


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def make_gateway(fallback_prompts: FallbackPrompts) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def factory(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {"media_host": "127.0.0.1", "media_port": 0, "admin_port": 0,
                                  "auth_tokens": TOKENS, "shutdown_timeout_s": 2.0,
                                  "model_connect_timeout_s": 2.0}
        values.update(overrides)
        gw = Gateway(Settings(**values), fallback=fallback_prompts)
        await gw.start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        if not gw.draining:
            await gw.shutdown(drain_timeout=0.5)


@pytest.fixture
async def fake_model() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeRealtime] = []

    async def factory(**script: Any) -> FakeRealtime:
        srv = FakeRealtime(Script(**script))
        await srv.__aenter__()
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        await srv.__aexit__()


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
                    from gateway.client.wsframe import encode_frame
                    self.writer.write(encode_frame(0x8, f.payload[:2]))
                else:
                    frames.append(f)
        return code, False, frames

    def close(self) -> None:
        self.writer.transport.abort()
