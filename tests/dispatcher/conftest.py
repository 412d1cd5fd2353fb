"""Fixtures for the dispatcher CLI: the real edge (tests/kamailio harness) and the ESL fake."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kamailio"))

from kamailio_harness import KAMAILIO, WORKER_IPS, KamailioEdge, SippUas, Worker  # noqa: E402


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli() -> Callable[..., object]:
    """Run `python -m dispatcher ...` as a separate process (it has its own event loop), async."""

    async def run(*args: str, env: dict[str, str], limit_s: float = 60) -> CliRun:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dispatcher", *args, env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), limit_s)
        return CliRun(proc.returncode or 0, out.decode(), err.decode())

    return run


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[list[SippUas]]:
    made: list[SippUas] = []
    yield made
    for uas in made:
        uas.kill()


@pytest.fixture
def live_edge(tmp_path: Path, stand_ins: list[SippUas]) -> Iterator[Callable[..., KamailioEdge]]:
    if not os.path.exists(KAMAILIO):
        pytest.skip("kamailio is installed by `make test`")
    edges: list[KamailioEdge] = []

    def make(n_workers: int = 2, *, sipp: bool = True, attrs: dict[str, str] | None = None,
             defines: dict[str, object] | None = None) -> KamailioEdge:
        attrs = attrs or {}
        workers = []
        for i in range(n_workers):
            if sipp:
                uas = SippUas(tmp_path, f"worker{i + 1}", WORKER_IPS[i]).start()
                stand_ins.append(uas)
                workers.append(Worker(f"fs{i + 1}", uas.host, uas.port, attrs.get(f"fs{i + 1}", "")))
            else:
                workers.append(Worker(f"fs{i + 1}", WORKER_IPS[i], 5080 + i, attrs.get(f"fs{i + 1}", "")))
        edge = KamailioEdge(tmp_path / "edge", workers=workers, defines=defines or {})
        edge.start()
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        edge.stop()


def _cli_env(edge: KamailioEdge, esl_workers: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "DISPATCHER_RPC_URL": edge.rpc_url,
        "DISPATCHER_LIST_FILE": str(edge.dispatcher_list),
        "DISPATCHER_RELOAD_DELTA": "1",
        "DISPATCHER_POLL_INTERVAL": "0.2",
        "DISPATCHER_ESL_TIMEOUT": "1",
        "DISPATCHER_ESL_WORKERS": json.dumps(esl_workers or {}),
    }


@pytest.fixture
async def fake_fs() -> AsyncIterator[Callable[..., object]]:
    """Factory of loopback FreeSWITCH event sockets replaying real 1.10.12 bytes (tests/fakes)."""
    fakes_mod = pytest.importorskip("fakes.freeswitch_esl", reason="ESL fake not in this checkout yet")
    started = []

    async def make(host: str = "127.0.0.1", calls: int = 0):
        fs = fakes_mod.FakeFreeSwitch(password="dispatch-test-secret", host=host)
        await fs.start()
        fs.calls = calls
        started.append(fs)
        return fs

    yield make
    for fs in started:
        await fs.close()


@pytest.fixture
def cli_env() -> Callable[..., dict[str, str]]:
    """DISPATCHER_* environment pointing the CLI at an edge (and ESL addresses per worker id)."""
    return _cli_env
