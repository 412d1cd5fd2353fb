"""A real FreeSWITCH with the project's freeswitch-conf/, started by a test on its own 127.0.0.x.

The tree is copied to a temporary folder and its vars.xml values overridden (addresses, ports, URLs,
passwords); every path FreeSWITCH uses is a command-line flag pointing into that folder, so several
instances run side by side. The mod_audio_stream edition is chosen with ``-mod DIR``: DIR links every
module of the build plus the wanted mod_audio_stream.so (an edition of the shared build, or any path,
e.g. a patched build).

Binary: $FREESWITCH_BIN, else /opt/fs/bin/freeswitch (``/work/shared/freeswitch/install.sh``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.net import free_port

REPO = Path(__file__).resolve().parents[2]
CONF_SRC = REPO / "freeswitch-conf"
DEFAULT_BIN = Path("/opt/fs/bin/freeswitch")
EDITIONS = ("voxcom", "upstream")


def freeswitch_binary() -> Path | None:
    """The FreeSWITCH to start, or None (then the tests that need one skip)."""
    named = os.environ.get("FREESWITCH_BIN")
    path = Path(named) if named else DEFAULT_BIN
    return path if path.is_file() and os.access(path, os.X_OK) else None


def module_dir(binary: Path) -> Path:
    return binary.resolve().parent.parent / "lib" / "freeswitch" / "mod"


def edition_module(binary: Path, edition: str) -> Path:
    """mod_audio_stream.so of a module edition shipped with the shared build."""
    if edition not in EDITIONS:
        raise ValueError(f"unknown mod_audio_stream edition {edition!r} (one of {EDITIONS})")
    return module_dir(binary).parent / "mod-editions" / edition / "mod_audio_stream.so"


class EslError(RuntimeError):
    pass


def esl_api(host: str, port: int, password: str, command: str, timeout: float = 10.0) -> str:
    """One `api` command over a fresh Event Socket connection; returns the body (-ERR included)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")

        def read_message() -> tuple[dict[str, str], bytes]:
            headers: dict[str, str] = {}
            while True:
                line = reader.readline()
                if not line:
                    raise EslError("event socket closed")
                line = line.rstrip(b"\n")
                if not line:
                    if headers:
                        break
                    continue
                name, _, value = line.decode().partition(":")
                headers[name.strip()] = value.strip()
            body = b""
            if "Content-Length" in headers:
                body = reader.read(int(headers["Content-Length"]))
            return headers, body

        headers, _ = read_message()
        if headers.get("Content-Type") != "auth/request":
            raise EslError(f"unexpected greeting {headers}")
        sock.sendall(f"auth {password}\n\n".encode())
        headers, _ = read_message()
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise EslError(f"auth refused: {headers.get('Reply-Text')}")
        sock.sendall(f"api {command}\n\n".encode())
        while True:
            headers, body = read_message()
            if headers.get("Content-Type") == "api/response":
                return body.decode(errors="replace")


@dataclass
class FreeSwitch:
    """One FreeSWITCH worker. ``vars`` overrides (or adds) vars.xml values after the harness's own."""

    workdir: Path
    host: str
    edition: str = "voxcom"
    audio_stream_so: Path | None = None  # any mod_audio_stream.so; wins over edition
    vars: dict[str, str] = field(default_factory=dict)
    binary: Path | None = None
    conf_src: Path = CONF_SRC
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.binary = self.binary or freeswitch_binary()
        if self.binary is None:
            raise FileNotFoundError("no FreeSWITCH binary (FREESWITCH_BIN or /opt/fs/bin/freeswitch)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port(self.host)
        self.esl_port = free_port(self.host, udp=False)
        self.rtp_start = free_port(self.host, tcp=False, span=400)
        self.esl_password = secrets.token_hex(12)
        self.stream_token = secrets.token_hex(12)
        self.proc: subprocess.Popen[bytes] | None = None
        self.dirs = {name: self.workdir / name for name in
                     ("conf", "log", "db", "run", "cache", "storage", "recordings", "sounds", "temp", "mod")}
        self.values: dict[str, str] = {
            "worker_id": "fs1",
            "private_ip": self.host,
            "ext_rtp_ip": self.host,
            "ext_sip_ip": self.host,
            "sip_port": str(self.sip_port),
            "kamailio_acl_cidr": "127.0.0.0/8",
            "kamailio_edge": f"{self.host}:5062",
            "rtp_start_port": str(self.rtp_start),
            "rtp_end_port": str(self.rtp_start + 399),
            # Nothing listens on the discard port: set these to a gateway (GatewayServe.stream_url etc.).
            "gateway_stream_urls": f"ws://{self.host}:9/stream",
            "gateway_ready_urls": f"http://{self.host}:9/readyz",
            "stream_token": self.stream_token,
            "esl_port": str(self.esl_port),
            "esl_password": self.esl_password,
            "esl_acl_cidr": "127.0.0.0/8",
            "log_level": "debug",
        }
        self.values.update(self.vars)
        self.esl_password = self.values["esl_password"]
        self.stream_token = self.values["stream_token"]

    # -- addresses --------------------------------------------------------------------------------

    @property
    def esl_address(self) -> str:
        """host:port:password, as GATEWAY_ESL_WORKERS and FREESWITCH_ESL take it."""
        return f"{self.host}:{self.esl_port}:{self.esl_password}"

    @property
    def sip_uri(self) -> str:
        return f"sip:{self.host}:{self.sip_port}"

    @property
    def log_path(self) -> Path:
        return self.dirs["log"] / "freeswitch.log"

    # -- configuration ------------------------------------------------------------------------------

    def set_vars(self, **values: str) -> None:
        """Change vars.xml values (before start, or followed by restart/reloadxml)."""
        self.values.update(values)
        if self.dirs["conf"].exists():
            self._write_vars()

    def _write_vars(self) -> None:
        path = self.dirs["conf"] / "vars.xml"
        text = path.read_text()
        for name, value in self.values.items():
            line = f'<X-PRE-PROCESS cmd="set" data="{name}={value}"/>'
            pattern = re.compile(rf'<X-PRE-PROCESS cmd="[a-z-]+" data="{re.escape(name)}=[^"]*"/>')
            text, n = pattern.subn(lambda _m, line=line: line, text)
            if n == 0:
                text = text.replace("</include>", f"  {line}\n</include>")
        path.write_text(text)

    def render(self) -> None:
        conf = self.dirs["conf"]
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(self.conf_src, conf)
        self._write_vars()
        for name, path in self.dirs.items():
            if name != "conf":
                path.mkdir(exist_ok=True)
        mod = self.dirs["mod"]
        for link in mod.iterdir():
            link.unlink()
        assert self.binary is not None
        for so in module_dir(self.binary).iterdir():
            if so.name != "mod_audio_stream.so":
                (mod / so.name).symlink_to(so.resolve())
        chosen = self.audio_stream_so or edition_module(self.binary, self.edition)
        if not Path(chosen).is_file():
            raise FileNotFoundError(f"mod_audio_stream.so not found: {chosen}")
        (mod / "mod_audio_stream.so").symlink_to(Path(chosen).resolve())

    def command(self) -> list[str]:
        d = self.dirs
        return [str(self.binary), "-nf", "-nc", "-nonat", "-conf", str(d["conf"]), "-log", str(d["log"]),
                "-db", str(d["db"]), "-run", str(d["run"]), "-cache", str(d["cache"]),
                "-storage", str(d["storage"]), "-recordings", str(d["recordings"]),
                "-sounds", str(d["sounds"]), "-temp", str(d["temp"]), "-mod", str(d["mod"])]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 45.0) -> FreeSwitch:
        self.render()
        out = (self.workdir / "stdout.log").open("ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **self.env})
        out.close()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"freeswitch exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                last = self.api("status", timeout=2)
                if "is ready" in last and "kamailio" in self.api("sofia status", timeout=2):
                    return self
            except (OSError, EslError) as exc:
                last = repr(exc)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"freeswitch not ready after {timeout} s ({last}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL of the whole process group after timeout. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # children (none expected) go with the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # -- inspection -------------------------------------------------------------------------------

    def api(self, command: str, timeout: float = 10.0) -> str:
        return esl_api(self.host, self.esl_port, self.esl_password, command, timeout)

    def calls(self) -> int:
        """`show calls count`: calls (bridged pairs count once) FreeSWITCH still has."""
        m = re.search(r"(\d+) total", self.api("show calls count"))
        return int(m.group(1)) if m else -1

    def channels(self) -> int:
        m = re.search(r"(\d+) total", self.api("show channels count"))
        return int(m.group(1)) if m else -1

    def wait_channels(self, wanted: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        n = self.channels()
        while n != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.channels()
        return n

    def global_var(self, name: str) -> str:
        return self.api(f"global_getvar {name}").strip()

    def wait_global(self, name: str, wanted: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        value = self.global_var(name)
        while value != wanted and time.monotonic() < deadline:
            time.sleep(0.1)
            value = self.global_var(name)
        return value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        out = self.workdir / "stdout.log"
        text = self.log() or (out.read_text(errors="replace") if out.exists() else "")
        cut = text.find("Clean up modules.")  # the shutdown's module unloading says nothing useful
        return text[:cut if cut > 0 else len(text)][-chars:]
