"""Fixtures for the handoff tests: an in-process `gateway serve` on this area's addresses (127.0.4.x,
free ports) with handoff profiles, the scripted Realtime server, the ESL fake, and a webhook receiver."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # realtime_fake
from handoff_env import HOST, METRICS_TOKEN, PROFILE, READ_TOKEN, STREAM_TOKEN, WEBHOOK_SECRET, write_profile  # noqa: E402,F401
from realtime_fake import fake_servers  # noqa: E402

from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402


@pytest.fixture(scope="session")
def manager_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (requirements/apt.txt)")
    path = tmp_path_factory.mktemp("audio") / "manager.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "I want to speak to a manager"], check=True, timeout=30)
    return path


@pytest.fixture
async def fake_model() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers() as factory:
        yield factory


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def factory(profile: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        profiles_dir = write_profile(tmp_path / f"profiles{len(started)}", **(profile or {}))
        values: dict[str, Any] = {"media_host": HOST, "media_port": 0, "admin_host": HOST, "admin_port": 0,
                                  "auth_tokens": STREAM_TOKEN, "shutdown_timeout_s": 2.0,
                                  "model_connect_timeout_s": 2.0, "profiles_dir": profiles_dir,
                                  "default_profile": "desk",
                                  "admin_tokens": f"desk:read:{READ_TOKEN},prom:metrics:{METRICS_TOKEN}",
                                  "handoff_webhook_secret": WEBHOOK_SECRET, "handoff_webhook_backoff_s": 0.05}
        values.update(overrides)
        settings = Settings(**values)
        profiles = load_profiles(profiles_dir, "desk")
        gw = Gateway(settings, profiles=profiles, fallback=FallbackPrompts(profiles))
        await gw.start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        if not gw.draining:
            await gw.shutdown(drain_timeout=0.5)
