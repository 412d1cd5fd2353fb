"""Outbound-call fixtures: the whole call path (harness.callpath) on this area's own addresses,
127.0.5.0/24, so these tests run beside every other area's."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.callpath import Addresses, CallPath
from harness.procs import GatewayModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
from fsmod_support import have_freeswitch, patched_module_so  # noqa: E402
from outbound_tokens import ADMIN  # noqa: E402

IPS = [f"127.0.5.{i}" for i in range(10, 40)]
MODEL_IP = "127.0.5.2"


def _have_tools() -> bool:
    return bool((shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()) and shutil.which("sipp")
                and shutil.which("espeak-ng") and shutil.which("sox"))


@pytest.fixture(scope="session")
def outbound_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayModel]:
    model = GatewayModel(tmp_path_factory.mktemp("outbound-model"), MODEL_IP)
    model.start()
    try:
        yield model
    finally:
        model.stop(timeout=5)


@pytest.fixture(scope="session")
def outbound_module() -> Path | None:
    return patched_module_so() if have_freeswitch() else None


@pytest.fixture
def outpath(tmp_path: Path, freeswitch_factory, request: pytest.FixtureRequest, outbound_model: GatewayModel,
            outbound_module: Path | None) -> Iterator[Callable[..., CallPath]]:
    """Factory: ``make(gateway_env={...}, workers=1)`` -> a started CallPath whose carrier side (the edge's
    CARRIER_TERM_URI) is the SIPp `path.human`, here the callee of the outbound calls."""
    if not _have_tools():
        pytest.skip("kamailio, sipp, espeak-ng and sox are installed by `make test` (requirements/apt.txt)")
    made: list[CallPath] = []

    def make(gateway_env: dict[str, str] | None = None, workers: int = 1, **kwargs: object) -> CallPath:
        if outbound_module is not None:
            kwargs.setdefault("audio_stream_so", outbound_module)
        env = {"GATEWAY_ADMIN_TOKENS": ADMIN, "GATEWAY_OUTBOUND_CALLER_IDS": "+15550001000",
               "GATEWAY_OUTBOUND_CPS": "20", **(gateway_env or {})}
        path = CallPath(tmp_path / f"path{len(made)}", Addresses.block(IPS[len(made) * 8:], workers),
                        freeswitch_factory, edition="voxcom", model=outbound_model, gateway_env=env,
                        **kwargs)  # type: ignore[arg-type]
        made.append(path)
        return path.start()

    yield make
    rep = getattr(request.node, "rep_call", None)
    for p in made:
        if rep is None or rep.failed:
            print(f"\n===== call path logs ({p.workdir}) =====\n{p.logs()}")
        p.stop()
