"""Helpers shared by the engine tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from aiohttp import web

from gateway.engine.server import Engine, build_app
from gateway.engine.settings import EngineSettings
from gateway.engine.validate import validate_server_event

# sox arguments that turn a WAV on stdin into each session format on stdout.
SOX_OUT = {
    "audio/pcmu": ["-r", "8000", "-e", "u-law", "-t", "raw", "-"],
    "audio/pcma": ["-r", "8000", "-e", "a-law", "-t", "raw", "-"],
    "audio/pcm": ["-r", "24000", "-b", "16", "-e", "signed-integer", "-L", "-t", "raw", "-"],
}
SILENCE_BYTE = {"audio/pcmu": b"\xff", "audio/pcma": b"\xd5", "audio/pcm": b"\x00\x00"}
BYTES_PER_MS = {"audio/pcmu": 8, "audio/pcma": 8, "audio/pcm": 48}


def silence(fmt: str, ms: int) -> bytes:
    return SILENCE_BYTE[fmt] * (ms * BYTES_PER_MS[fmt] // len(SILENCE_BYTE[fmt]))


class Conversation:
    """An SDK Realtime connection that records and validates every server event."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []
        self._cursor = 0
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            raw = await self.conn.recv_bytes()
            event = json.loads(raw)
            validate_server_event(event)  # fails the test on the first event the SDK would not accept
            self.events.append(event)
            self._new.set()

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(event)

    async def send_raw(self, data: str | bytes) -> None:
        await self.conn.send_raw(data)

    async def append(self, audio: bytes, chunk: int = 1600) -> None:
        for i in range(0, len(audio), chunk):
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + chunk]).decode())

    async def expect(
        self,
        etype: str,
        pred: Callable[[dict[str, Any]], bool] = lambda e: True,
        wait: float = 30.0,
        since: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The first event of `etype` matching `pred` after the previous match (or after `since`)."""

        async def find() -> dict[str, Any]:
            i = self.events.index(since) + 1 if since is not None else self._cursor
            while True:
                if self._task.done():
                    self._task.result()
                while i < len(self.events):
                    ev = self.events[i]
                    i += 1
                    if ev["type"] == etype and pred(ev):
                        self._cursor = max(self._cursor, i)
                        return ev
                self._new.clear()
                await self._new.wait()

        try:
            return await asyncio.wait_for(find(), wait)
        except TimeoutError:
            seen = [e["type"] for e in self.events if not e["type"].endswith("delta")]
            raise AssertionError(f"no {etype} within {wait}s; events so far: {seen}") from None

    def since(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self.events[self.events.index(event) :]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def front_desk_update(
    fmt: str = "audio/pcmu", tools: tuple[str, ...] = ("transfer_call", "end_call", "escalate"), **turn: Any
) -> dict[str, Any]:
    """The session.update the gateway sends for a front-desk call (docs/gateway.md)."""
    td = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
        **turn,
    }
    fmt_obj = {"type": fmt, "rate": 24000} if fmt == "audio/pcm" else {"type": fmt}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "You are the front desk of Riverside Dental.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": fmt_obj, "turn_detection": td},
                "output": {"format": fmt_obj, "voice": "marin"},
            },
            "tools": [
                {"type": "function", "name": n, "description": n, "parameters": {"type": "object"}}
                for n in tools
            ],
        },
    }


@lru_cache(maxsize=1)
def _engine_defaults() -> Engine:
    # Loading the phone decoder and synthesiser once per test run keeps the suite quick.
    return Engine(EngineSettings())


async def start_engine(**settings: Any) -> tuple[web.AppRunner, int, Engine]:
    base = _engine_defaults()
    engine = Engine.__new__(Engine)
    engine.__dict__.update(base.__dict__)
    engine.settings = EngineSettings(**settings)
    engine.sessions = 0
    runner = web.AppRunner(build_app(engine), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port bound for port 0
    return runner, port, engine
