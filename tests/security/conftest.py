"""Fixtures of the security suite: the real Kamailio edge (repository cfg) on this suite's own loopback
addresses, SIP stand-ins that count what reaches them, and sipvicious runs."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kamailio"))

from kamailio_harness import KAMAILIO, SIPP, KamailioEdge, SippUas, Worker  # noqa: E402
from sip_tools import EDGE_IP, TRUNK_IP, WORKER_IPS, CountingWorker  # noqa: E402

if not (shutil.which(KAMAILIO) and shutil.which(SIPP)):
    pytest.skip("kamailio and sipp are installed by `make test` (requirements/apt.txt)",
                allow_module_level=True)


@pytest.fixture
def counting_workers() -> Iterator[Callable[[int], list[CountingWorker]]]:
    """Factory: n UDP worker stand-ins that answer and record every request the edge forwards."""
    made: list[CountingWorker] = []

    def make(n: int = 1) -> list[CountingWorker]:
        new = [CountingWorker(WORKER_IPS[(len(made) + i) % len(WORKER_IPS)]).start() for i in range(n)]
        made.extend(new)
        return new

    yield make
    for w in made:
        w.stop()


@pytest.fixture
def sipp_workers(tmp_path: Path) -> Iterator[Callable[[int], list[SippUas]]]:
    """Factory: n SIPp UAS worker stand-ins (answer 200, echo Record-Route) on this suite's addresses."""
    made: list[SippUas] = []

    def make(n: int = 1) -> list[SippUas]:
        new = [SippUas(tmp_path, f"worker{len(made) + i + 1}", WORKER_IPS[(len(made) + i) % len(WORKER_IPS)])
               for i in range(n)]
        for uas in new:
            uas.start()
        made.extend(new)
        return new

    yield make
    for uas in made:
        uas.kill()


@pytest.fixture
def sec_edge(tmp_path: Path) -> Iterator[Callable[..., KamailioEdge]]:
    """Factory: the edge on EDGE_IP with TRUNK_IP as its only carrier, in front of the given workers."""
    started: list[KamailioEdge] = []

    def make(stand_ins: list[SippUas | CountingWorker] = (), *, defines: dict | None = None,
             **kwargs: object) -> KamailioEdge:
        ws = [Worker(f"fs{i + 1}", w.host, w.port) for i, w in enumerate(stand_ins)]
        e = KamailioEdge(tmp_path / f"edge{len(started)}", workers=ws, defines=defines or {}, host=EDGE_IP,
                         carriers=kwargs.pop("carriers", (TRUNK_IP,)), **kwargs)  # type: ignore[arg-type]
        started.append(e)
        e.start()
        return e

    yield make
    for e in started:
        e.stop()
