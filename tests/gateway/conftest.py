"""Fixtures for the gateway tests: a real `gateway serve` (in-process, random loopback ports) in front
of a scripted Realtime-protocol server, caller audio from espeak-ng, raw mod_audio_stream bytes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

# Imported early: hypothesis's lazy import at the terminal summary trips a CPython 3.11.7 ast bug
# ("AST constructor recursion depth mismatch") after the socket tests.
import hypothesis  # noqa: F401
import pytest
from realtime_fake import fake_servers

from gateway.fallback import FallbackPrompts
from gateway.profiles import load_profiles
from gateway.serve import Gateway
from gateway.settings import DEFAULT_PROFILES_DIR, Settings

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


GatewayFactory = Callable[..., Any]


@pytest.fixture
def media_stack() -> str | None:
    """GATEWAY_MEDIA_STACK of the gateways `make_gateway` starts: None = the environment's or the default.
    Tests that must hold on both stacks parametrize it (`@pytest.mark.parametrize("media_stack", ...)`)."""
    return None


@pytest.fixture
async def make_gateway(fallback_prompts: FallbackPrompts,
                       media_stack: str | None) -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def factory(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {"media_host": "127.0.0.1", "media_port": 0, "admin_port": 0,
                                  "auth_tokens": TOKENS, "shutdown_timeout_s": 2.0,
                                  "model_connect_timeout_s": 2.0}
        if media_stack is not None:
            values["media_stack"] = media_stack
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
    async with fake_servers() as factory:
        yield factory


