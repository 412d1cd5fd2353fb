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
from handoff_env import (  # noqa: E402,F401
    CONTROL_TOKEN,
    HOST,
    METRICS_TOKEN,
    PROFILE,
    READ_TOKEN,
    STREAM_TOKEN,
    WEBHOOK_SECRET,
    write_profile,
)
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
                                  "admin_tokens": f"desk:read:{READ_TOKEN},prom:metrics:{METRICS_TOKEN},"
                                                  f"ops:control:{CONTROL_TOKEN}",
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


# ---------------------------------------------------------------- the real call path (FreeSWITCH)
# Kamailio edge, FreeSWITCH worker, gateway serve, SIPp callers and humans on 127.0.4.21-38, the
# embedded engine on 127.0.4.39 (started once for the folder, only when a real-FreeSWITCH test runs).
E2E_IPS = [f"127.0.4.{i}" for i in range(21, 39)]
MODEL_IP = "127.0.4.39"


@pytest.fixture(scope="session")
def handoff_model(tmp_path_factory: pytest.TempPathFactory):
    from harness.procs import GatewayModel

    model = GatewayModel(tmp_path_factory.mktemp("handoff-model"), MODEL_IP)
    model.start()
    try:
        yield model
    finally:
        model.stop(timeout=5)


@pytest.fixture(scope="session")
def handoff_module() -> Path | None:
    """The patched mod_audio_stream the project ships (as tests/e2e uses), or None without headers."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
    from fsmod_support import have_freeswitch, patched_module_so

    return patched_module_so() if have_freeswitch() else None


@pytest.fixture
def handoff_path(tmp_path: Path, freeswitch_factory, request: pytest.FixtureRequest, handoff_model,
                 handoff_module):
    """Factory: ``make(handoff={...}, human=dict(busy=..., decline=..., noanswer=...))`` -> a started
    CallPath whose gateway runs the shipped profiles with front-desk's `handoff:` block replaced."""
    from handoff_sipp import human_factory
    from harness.callpath import Addresses, CallPath

    from gateway.settings import DEFAULT_PROFILES_DIR

    made: list[Any] = []

    def make(handoff: dict[str, Any], human: dict[str, Any] | None = None, **kwargs: Any):
        profiles = tmp_path / f"profiles{len(made)}"
        profiles.mkdir()
        for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
            doc = yaml.safe_load(src.read_text())
            if doc.get("name") == "front-desk":
                doc["handoff"] = handoff
                doc["transfer_targets"] = {**doc["transfer_targets"], "sales": "2002", "nurse": "2003"}
            (profiles / src.name).write_text(yaml.safe_dump(doc))
        if handoff_module is not None:
            kwargs.setdefault("audio_stream_so", handoff_module)
        path = CallPath(tmp_path / f"path{len(made)}", Addresses.block(E2E_IPS), freeswitch_factory,
                        edition="voxcom", model=handoff_model,
                        gateway_env={"GATEWAY_PROFILES_DIR": str(profiles)},
                        human_factory=human_factory(**(human or {})), **kwargs)
        made.append(path)
        return path.start()

    yield make
    rep = getattr(request.node, "rep_call", None)
    for p in made:
        if rep is None or rep.failed:
            print(f"\n===== call path logs ({p.workdir}) =====\n{p.logs()}")
            for fs in p.workers:
                print(f"--- freeswitch {fs.host} ---\n{fs.log()[-6000:] if hasattr(fs, 'log') else ''}")
        p.stop()
