"""End-to-end fixtures: the whole call path (harness.callpath) on this area's addresses, 127.0.0.21-39.

Tests run one after another in a pytest process, so they may reuse addresses; every port is free-picked.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.callpath import Addresses, CallPath
from harness.procs import GatewayModel

if not (shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()) or not shutil.which("sipp"):
    pytest.skip("kamailio and sipp are installed by `make test` (requirements/apt.txt)",
                allow_module_level=True)
if not shutil.which("espeak-ng") or not shutil.which("sox"):
    pytest.skip("espeak-ng and sox are installed by `make test`", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
from fsmod_support import have_freeswitch, patched_module_so  # noqa: E402

IPS = [f"127.0.0.{i}" for i in range(21, 39)]
MODEL_IP = "127.0.0.39"


@pytest.fixture(scope="session")
def shared_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayModel]:
    """One `gateway model` for the folder (sessions are independent); a test that kills the model asks
    for its own with ``callpath(own_model=True)``."""
    model = GatewayModel(tmp_path_factory.mktemp("shared-model"), MODEL_IP)
    model.start()
    try:
        yield model
    finally:
        model.stop(timeout=5)


@pytest.fixture(scope="session")
def shipped_module() -> Path | None:
    """The mod_audio_stream the project ships as its "voxcom" edition: the voxcom-us fork with
    packaging/mod_audio_stream/patches applied (built once into a cache outside the tree). None without
    FreeSWITCH's headers (the freeswitch tests are skipped then anyway)."""
    if not have_freeswitch():
        return None
    return patched_module_so()


@pytest.fixture
def callpath(tmp_path: Path, freeswitch_factory, request: pytest.FixtureRequest,
             shared_model: GatewayModel, shipped_module: Path | None) -> Iterator[Callable[..., CallPath]]:
    """Factory: ``make(edition="voxcom", workers=1, own_model=False, **CallPath kwargs)`` -> a started
    CallPath. "voxcom" loads the patched build the project ships (packaging/mod_audio_stream), not the
    stock fork of the shared FreeSWITCH build; "upstream" is the shared build's amigniter module."""
    made: list[CallPath] = []

    def make(edition: str = "voxcom", workers: int = 1, own_model: bool = False,
             **kwargs: object) -> CallPath:
        if edition == "voxcom" and shipped_module is not None:
            kwargs.setdefault("audio_stream_so", shipped_module)
        if not own_model:
            kwargs["model"] = shared_model
        path = CallPath(tmp_path / f"path{len(made)}", Addresses.block(IPS, workers), freeswitch_factory,
                        edition=edition, **kwargs)  # type: ignore[arg-type]
        made.append(path)
        return path.start()

    yield make
    rep = getattr(request.node, "rep_call", None)
    for p in made:
        if rep is None or rep.failed:
            print(f"\n===== call path logs ({p.workdir}) =====\n{p.logs()}")
        p.stop()
