"""Suite-wide switches and the real-FreeSWITCH fixtures. Each area keeps its own fixtures in
tests/<area>/conftest.py; the process harness is the ``harness`` package beside this file."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/ on sys.path (pytest's rootdir-conftest import does this too; explicit for scripts and benchmarks).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.freeswitch import FreeSwitch, freeswitch_binary  # noqa: E402

NO_FREESWITCH = ("no FreeSWITCH: run /work/shared/freeswitch/install.sh (or set FREESWITCH_BIN), "
                 "or set FREESWITCH_ESL=host:port:password for an external one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `freeswitch` tests run against the build found on this machine (FREESWITCH_BIN, /opt/fs), or an
    # external FreeSWITCH named by FREESWITCH_ESL; skipped only when neither exists.
    if os.environ.get("FREESWITCH_ESL") or freeswitch_binary() is not None:
        return
    skip = pytest.mark.skip(reason=NO_FREESWITCH)
    for item in items:
        if "freeswitch" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def freeswitch_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., FreeSwitch]]:
    """Factory: ``make(host, edition="voxcom", audio_stream_so=None, vars={...}, start=True)`` returns a
    FreeSwitch running the project's freeswitch-conf/ on host. All are stopped at teardown (SIGTERM,
    SIGKILL after 10 s); a failed test prints the tail of each log."""
    if freeswitch_binary() is None:
        pytest.skip(NO_FREESWITCH)
    made: list[FreeSwitch] = []

    def make(host: str, *, start: bool = True, **kwargs: object) -> FreeSwitch:
        fs = FreeSwitch(tmp_path / f"fs-{host}-{len(made)}", host, **kwargs)  # type: ignore[arg-type]
        made.append(fs)
        if start:
            fs.start()
        return fs

    yield make
    for fs in made:
        fs.stop()
    if _failed(request):
        for fs in made:
            print(f"\n===== FreeSWITCH {fs.host} log tail ({fs.log_path}) =====\n{fs.log_tail()}")


@pytest.fixture(scope="module")
def freeswitch_esl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port:password of a FreeSWITCH running freeswitch-conf/, shared by a test module:
    FREESWITCH_ESL when set (an external one), else the local build started on 127.0.0.20."""
    if os.environ.get("FREESWITCH_ESL"):
        yield os.environ["FREESWITCH_ESL"]
        return
    if freeswitch_binary() is None:
        pytest.skip(NO_FREESWITCH)
    fs = FreeSwitch(tmp_path_factory.mktemp("fs-shared"), "127.0.0.20")
    try:
        fs.start()
        yield fs.esl_address
    finally:
        fs.stop()
