"""End-to-end fixtures: the whole call path (harness.callpath) on this area's addresses, 127.0.0.21-39.

Tests run one after another in a pytest process, so they may reuse addresses; every port is free-picked.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness.callpath import Addresses, CallPath

if not (shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()) or not shutil.which("sipp"):
    pytest.skip("kamailio and sipp are installed by `make test` (requirements/apt.txt)",
                allow_module_level=True)
if not shutil.which("espeak-ng") or not shutil.which("sox"):
    pytest.skip("espeak-ng and sox are installed by `make test`", allow_module_level=True)

IPS = [f"127.0.0.{i}" for i in range(21, 40)]


@pytest.fixture
def callpath(tmp_path: Path, freeswitch_factory,
             request: pytest.FixtureRequest) -> Iterator[Callable[..., CallPath]]:
    """Factory: ``make(edition="voxcom", workers=1, **CallPath kwargs)`` -> a started CallPath."""
    made: list[CallPath] = []

    def make(edition: str = "voxcom", workers: int = 1, **kwargs: object) -> CallPath:
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
