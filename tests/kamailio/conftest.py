"""Fixtures that start the real Kamailio (repository cfg) and SIPp stand-ins on loopback."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kamailio_harness import (  # noqa: E402  (path set just above)
    KAMAILIO,
    SIPP,
    WORKER_IPS,
    KamailioEdge,
    SippUas,
    Worker,
)

if not (shutil.which(KAMAILIO) and shutil.which(SIPP)):
    pytest.skip("kamailio and sipp are installed by `make test` (requirements/apt.txt)",
                allow_module_level=True)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., list[SippUas]]]:
    """Factory: n SIPp worker stand-ins (UAS echoing Record-Route), started, on 127.0.0.11..13."""
    made: list[SippUas] = []

    def make(n: int, scenario: str = "uas-worker-echo.xml") -> list[SippUas]:
        new = [SippUas(tmp_path, f"worker{len(made) + i + 1}", WORKER_IPS[(len(made) + i) % len(WORKER_IPS)],
                       scenario=scenario) for i in range(n)]
        for uas in new:
            uas.start()
        made.extend(new)
        return new

    yield make
    for uas in made:
        uas.kill()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Callable[..., KamailioEdge]]:
    """Factory: the edge rendered for the given worker stand-ins and defines, started."""
    started: list[KamailioEdge] = []

    def make(stand_ins: list[SippUas] = (), *, attrs: dict[str, str] | None = None,
             priorities: dict[str, int] | None = None, start: bool = True, **kwargs: object) -> KamailioEdge:
        """Workers are named fs1, fs2... in the order given; attrs/priorities are keyed by that name."""
        attrs, priorities = attrs or {}, priorities or {}
        ws = [Worker(f"fs{i + 1}", u.host, u.port, attrs.get(f"fs{i + 1}", ""),
                     priority=priorities.get(f"fs{i + 1}", 0)) for i, u in enumerate(stand_ins)]
        e = KamailioEdge(tmp_path / f"edge{len(started)}", workers=ws, **kwargs)  # type: ignore[arg-type]
        started.append(e)
        if start:
            e.start()
        return e

    yield make
    for e in started:
        e.stop()
