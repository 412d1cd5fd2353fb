"""`gateway serve` and `gateway model` as the operator runs them: separate processes on a given address.

Each keeps its log in its workdir (printed by the fixtures when a test fails) and can be killed,
SIGTERMed (drain) and restarted on the same ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.net import free_port, wait_tcp

REPO = Path(__file__).resolve().parents[2]


class Process:
    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir, self.name = workdir, name
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class GatewayModel(Process):
    """`gateway model`: the embedded offline Realtime engine."""

    def __init__(self, workdir: Path, host: str, *, port: int | None = None,
                 extra: list[str] | None = None) -> None:
        super().__init__(workdir, f"model-{host}")
        self.host = host
        self.port = port or free_port(host, udp=False)
        self.extra = extra or []

    @property
    def url(self) -> str:
        """The SDK's websocket_base_url (GATEWAY_MODEL_URL)."""
        return f"ws://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 90.0) -> GatewayModel:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        self._spawn([sys.executable, "-m", "gateway", "model", "--host", self.host, "--port", str(self.port),
                     *self.extra], {})

    def wait_ready(self, timeout: float = 90.0) -> GatewayModel:
        # It binds early and logs "listening" once its voice and recogniser are loaded.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive() and "listening" not in self.log():
            time.sleep(0.1)
        if not wait_tcp(self.host, self.port, max(0.5, deadline - time.monotonic())) or not self.alive():
            raise RuntimeError(f"gateway model did not listen on {self.host}:{self.port}:\n"
                               f"{self.log()[-3000:]}")
        return self


class GatewayServe(Process):
    """`gateway serve` with call control over ESL to the given workers."""

    def __init__(self, workdir: Path, host: str, *, token: str, model_url: str | None = None,
                 esl_workers: dict[str, str] | None = None, playback_mode: dict[str, str] | None = None,
                 env: dict[str, str] | None = None, name: str | None = None) -> None:
        super().__init__(workdir, name or f"serve-{host}")
        self.host = host
        self.media_port = free_port(host, udp=False)
        self.admin_port = free_port(host, udp=False)
        self.token = token
        self.env = {
            "GATEWAY_MEDIA_HOST": host,
            "GATEWAY_MEDIA_PORT": str(self.media_port),
            "GATEWAY_ADMIN_HOST": host,
            "GATEWAY_ADMIN_PORT": str(self.admin_port),
            "GATEWAY_AUTH_TOKENS": token,
            "GATEWAY_LOG_LEVEL": "DEBUG",
            "GATEWAY_SHUTDOWN_TIMEOUT_S": "10",
            "GATEWAY_ESL_WORKERS": json.dumps(esl_workers or {}),
            "GATEWAY_PLAYBACK_MODE": json.dumps(playback_mode or {}),
            **({"GATEWAY_MODEL_URL": model_url} if model_url else {}),
            **(env or {}),
        }

    @property
    def stream_url(self) -> str:
        """What freeswitch-conf's gateway_stream_urls holds (/<uuid> is appended by the dialplan)."""
        return f"ws://{self.host}:{self.media_port}/stream"

    @property
    def ready_url(self) -> str:
        """What freeswitch-conf's gateway_ready_urls holds for this gateway: /readyz on the media
        listener, which the workers reach (the admin API usually listens on localhost only)."""
        return f"http://{self.host}:{self.media_port}/readyz"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    def start(self, timeout: float = 60.0) -> GatewayServe:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        self._spawn([sys.executable, "-m", "gateway", "serve"], self.env)

    def wait_ready(self, timeout: float = 60.0) -> GatewayServe:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"gateway serve exited:\n{self.log()[-3000:]}")
            if self.ready() == 200:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"gateway serve not ready:\n{self.log()[-3000:]}")

    def ready(self) -> int | None:
        try:
            return httpx.get(f"{self.admin_url}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def live_calls(self) -> list[dict]:
        return httpx.get(f"{self.admin_url}/calls", timeout=5).json()

    def wait_call_uuid(self, timeout: float = 10.0) -> str:
        """The FreeSWITCH uuid of the (first) live call, once its stream is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.live_calls()
            if calls:
                return calls[0]["uuid"]
            time.sleep(0.05)
        raise AssertionError("no live call at the gateway")

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.admin_url}{path}", json=body or {}, timeout=15)

    def metrics(self) -> str:
        return httpx.get(f"{self.admin_url}/metrics", timeout=5).text
