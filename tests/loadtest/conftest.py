"""Fixtures for the load-test harness tests: real sipp processes on 127.0.0.1, speech from espeak-ng."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lt_helpers import SIPP, TEST_SCENARIOS, free_tcp_port, need_sipp, run_uac  # noqa: F401 - re-exported to fixtures

from loadtest import scenario_path
from loadtest.audio import DEFAULT_QUESTION, speak_ulaw
from loadtest.ports import free_udp_port

REPO = Path(__file__).resolve().parents[2]
@dataclass
class Uas:
    """A background SIPp UAS (worker stand-in) on 127.0.0.1."""

    proc: subprocess.Popen
    port: int
    media_port: int
    workdir: Path
    host: str = "127.0.0.1"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding question.ulaw (headerless mu-law speech), made once per session."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to make speech audio; `make test` installs them")
    d = tmp_path_factory.mktemp("speech")
    speak_ulaw(DEFAULT_QUESTION, d / "question.ulaw")
    return d


@pytest.fixture
def start_uas(tmp_path: Path) -> Iterator:
    """Start SIPp UASes; every one is stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[Uas] = []

    def _start(scenario: str | Path, *extra: str, rtp_echo: bool = True, host: str = "127.0.0.1") -> Uas:
        sipp = need_sipp()
        path = Path(scenario) if Path(scenario).is_file() else scenario_path(str(scenario))
        port = free_udp_port(host)
        mport = free_udp_port(host, span=2, step=2, even=True)
        workdir = tmp_path / f"uas-{port}"
        workdir.mkdir()
        cmd = [sipp, "-sf", str(path), "-i", host, "-p", str(port), "-mp", str(mport),
               "-nostdin", "-aa", "-timeout", "120s", "-trace_err", "-error_file", str(workdir / "err.log"),
               *(["-rtp_echo"] if rtp_echo else []), *extra]
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)  # sipp binds its sockets within a few ms; a failed bind exits at once
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-500:]
            raise RuntimeError(f"UAS exited at start ({proc.returncode}): {err}")
        uas = Uas(proc, port, mport, workdir, host)
        started.append(uas)
        return uas

    yield _start
    for uas in started:
        if uas.proc.poll() is None:
            uas.proc.send_signal(signal.SIGTERM)
            try:
                uas.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                uas.proc.kill()
                uas.proc.wait()
        if uas.proc.stderr:
            uas.proc.stderr.close()


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log: Path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Start `gateway serve` / `gateway model` as real processes on random loopback ports."""
    import importlib.util

    if importlib.util.find_spec("gateway.serve") is None:
        pytest.skip("gateway.serve is not importable yet (media-plane helper has not landed it)")
    running: list[Served] = []

    def _start(*args: str, port_flag: str, name: str) -> Served:
        port = free_tcp_port()
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gateway", *args, port_flag, str(port)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=REPO)
        served = Served(proc, port, log)
        running.append(served)
        _wait_listening(port, proc)
        return served

    yield _start
    for served in running:
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGTERM)
            try:
                served.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                served.proc.kill()
                served.proc.wait()
