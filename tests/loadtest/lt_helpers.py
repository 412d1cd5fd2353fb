"""Helpers the load-test tests import by name (tests/ has no packages, and importing from `conftest`
picks whichever area's conftest pytest loaded last)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from loadtest import scenario_path
from loadtest.ports import free_udp_port

TEST_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp")


def need_sipp() -> str:
    if SIPP is None:
        pytest.skip("sipp (Debian package sip-tester) is not installed; `make test` installs it")
    return SIPP


def run_uac(workdir: Path, target: str, scenario: str | Path, *extra: str,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a SIPp UAC to completion (bounded by -timeout and a hard subprocess timeout)."""
    sipp = need_sipp()
    path = Path(scenario) if Path(scenario).is_file() else scenario_path(str(scenario))
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sipp, target, "-sf", str(path), "-i", "127.0.0.1", "-p", str(free_udp_port()),
           "-mp", str(free_udp_port(span=2, step=2, even=True)), "-nostdin",
           "-timeout", f"{int(timeout)}s", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
           "-trace_err", "-error_file", "err.log", "-trace_screen", "-screen_file", "screen.log", *extra]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=timeout + 30)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
