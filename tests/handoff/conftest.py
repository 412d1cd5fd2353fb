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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))  # realtime_fake
from realtime_fake import fake_servers  # noqa: E402

from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import Settings  # noqa: E402

HOST = "127.0.4.1"
ESL_HOST = "127.0.4.2"
STREAM_TOKEN = "handoff-stream-token"
READ_TOKEN = "desk-read-secret-0123456789"
METRICS_TOKEN = "prom-metrics-secret-0123456789"
WEBHOOK_SECRET = "handoff-webhook-secret-0123456789"

PROFILE: dict[str, Any] = {
    "name": "desk",
    "instructions": "You are a front desk.",
    "greeting": "Hello.",
    "tools": ["escalate", "transfer_call", "end_call"],
    "transfer_targets": {"billing": "2001", "human": "sip:+15550199@trunk"},
    "escalation_target": "human",
    "handoff": {
        "targets": [{"target": "billing", "queue": "billing-queue", "timeout_s": 8},
                    {"target": "human", "timeout_s": 8}],
        "attributes": {"skill": "billing", "priority": 5, "vip": True, "language": "en-US"},
        "last_turns": 4,
        "max_hops": 2,
        "mode": "blind",
    },
}


def write_profile(directory: Path, **changes: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {**PROFILE, **changes}
    (directory / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))
    return directory


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
