"""Fixtures for the embedded engine: caller audio made with espeak-ng + sox, a real engine on loopback,
and an SDK conversation wrapper that validates every server event against the SDK's models."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import pytest
from engine_helpers import SOX_OUT, Conversation, silence, start_engine


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (requirements/apt.txt)")


@lru_cache(maxsize=64)
def _speak(text: str, fmt: str) -> bytes:
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True
    ).stdout
    return subprocess.run(
        ["sox", "-D", "-t", "wav", "-", *SOX_OUT[fmt]], input=wav, capture_output=True, check=True
    ).stdout


@pytest.fixture
def say() -> Callable[..., bytes]:
    """say(text, fmt) -> caller audio in `fmt`: 200 ms silence, the phrase, 900 ms silence (so server
    VAD ends the turn with the default 500 ms silence_duration_ms)."""
    _need("espeak-ng")
    _need("sox")

    def make(text: str, fmt: str = "audio/pcmu", lead_ms: int = 200, tail_ms: int = 900) -> bytes:
        return silence(fmt, lead_ms) + _speak(text, fmt) + silence(fmt, tail_ms)

    return make


@pytest.fixture
async def engine_url() -> AsyncIterator[str]:
    """A real engine on a random loopback port (pace 2x real time: responses stay in progress long
    enough to be interrupted, but the suite does not wait out every reply at 1x)."""
    runner, port, _ = await start_engine(pace=2.0)
    yield f"ws://127.0.0.1:{port}/v1"
    await runner.cleanup()


@pytest.fixture
async def connect(engine_url: str):
    """connect(profile=..., url=...) -> Conversation over the official SDK, closed after the test."""
    from openai import AsyncOpenAI

    opened: list[tuple[Any, Conversation]] = []

    async def open_(
        profile: str | None = "front-desk", url: str | None = None, api_key: str = "x"
    ) -> Conversation:
        client = AsyncOpenAI(api_key=api_key, websocket_base_url=url or engine_url, max_retries=0)
        extra = {"profile": profile} if profile else {}
        manager = client.realtime.connect(model="gpt-realtime", extra_query=extra)
        conn = await manager.enter()
        conv = Conversation(conn)
        opened.append((manager, conv))
        return conv

    yield open_
    for manager, conv in opened:
        await conv.close()
        await manager.__aexit__(None, None, None)
