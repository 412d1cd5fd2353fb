"""Start the repository's kamailio.cfg and SIPp stand-ins on loopback, for tests and the benchmark.

Kamailio runs from a temporary directory holding a copy of ``kamailio-conf/kamailio.cfg`` plus a
rendered ``kamailio-local.cfg`` (random ports, test paths), ``dispatcher.list`` and
``address.list``: exactly the three files Ansible renders on a real edge.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "kamailio-conf" / "kamailio.cfg"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# Worker stand-ins (echo, 503) are the load-test helper's; only the edge-specific callers live here.
LOADTEST_SCENARIOS = REPO / "loadtest" / "scenarios"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"

# Loopback roles used across the tests: the trunk is 127.0.0.1, strangers live elsewhere in 127/8.
TRUNK_IP = "127.0.0.1"
STRANGER_IP = "127.0.0.2"
FLOODER_IP = "127.0.0.3"
SCANNER_IP = "127.0.0.4"
WORKER_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")

_used_ports: set[int] = set()


def scenario_path(name: str) -> Path:
    for directory in (SCENARIOS, LOADTEST_SCENARIOS):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on host (Kamailio listens on both with one number)."""
    for _ in range(200):
        port = random.randint(20000, 59000)
        if port in _used_ports:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind((host, port))
                t.bind((host, port))
        except OSError:
            continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def free_media_port(host: str = "127.0.0.1") -> int:
    """SIPp uses -mp and -mp+2 (RTP/RTCP echo); keep clear of other instances."""
    while True:
        port = free_port(host)
        if port + 2 not in _used_ports:
            _used_ports.update({port + 1, port + 2, port + 3})
            return port


@dataclass
class Worker:
    """One dispatcher destination (a FreeSWITCH worker, here a SIPp UAS)."""

    duid: str
    host: str
    port: int
    attrs: str = ""
    flags: int = 8
    priority: int = 0

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    def list_line(self, setid: int = 1) -> str:
        attrs = f"duid={self.duid}" + (f";{self.attrs}" if self.attrs else "")
        return f"{setid} {self.uri} {self.flags} {self.priority} {attrs}"


@dataclass
class KamailioEdge:
    """The edge under test, rendered into workdir and run in the foreground (-DD -E)."""

    workdir: Path
    workers: list[Worker] = field(default_factory=list)
    defines: dict[str, str | int | None] = field(default_factory=dict)
    carriers: Iterable[str] = (TRUNK_IP,)
    worker_group: Iterable[str] = ()
    shm_mb: int = 256
    log_level: int = 2
    extra_args: tuple[str, ...] = ()
    # Address of every listener (public, private, HTTP RPC); tests in tests/security use their own.
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir = self.workdir / "run"
        self.rundir.mkdir(exist_ok=True)
        # A UNIX socket path must stay under 108 bytes: pytest's tmp paths can be longer.
        self.sockdir = Path(tempfile.mkdtemp(prefix="kam-", dir="/tmp"))
        self.rpc_socket = self.sockdir / "rpc.sock"
        self.sip_port = free_port(self.host)
        self.private_port = free_port(self.host)
        self.rpc_port = free_port(self.host)  # only listened on with WITH_HTTP_RPC / WITH_PROMETHEUS
        self.tls_port = free_port(self.host)  # only listened on with WITH_TLS; never the fixed 5061
        self.cfg = self.workdir / "kamailio.cfg"
        self.local_cfg = self.workdir / "kamailio-local.cfg"
        self.dispatcher_list = self.workdir / "dispatcher.list"
        self.address_list = self.workdir / "address.list"
        self.log_path = self.workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.render()

    @property
    def rpc_url(self) -> str:
        """The JSON-RPC address the `dispatcher` CLI takes (the default transport: UNIX socket)."""
        return f"unix:{self.rpc_socket}"

    @property
    def http_rpc_url(self) -> str:
        """JSON-RPC over HTTP, served only with WITH_HTTP_RPC."""
        return f"http://{self.host}:{self.rpc_port}/RPC"

    @property
    def sip_target(self) -> str:
        return f"{self.host}:{self.sip_port}"

    @property
    def sip_addr(self) -> tuple[str, int]:
        return self.host, self.sip_port

    @property
    def private_addr(self) -> tuple[str, int]:
        return self.host, self.private_port

    def render(self) -> None:
        shutil.copy(KAMAILIO_CFG, self.cfg)
        values: dict[str, str | int | None] = {
            "EDGE_PUBLIC_ADDR": self.host,
            "EDGE_SIP_PORT": self.sip_port,
            "EDGE_TLS_PORT": self.tls_port,
            "EDGE_PRIVATE_ADDR": self.host,
            "EDGE_PRIVATE_PORT": self.private_port,
            "RPC_ADDR": self.host,
            "RPC_PORT": self.rpc_port,
            "RPC_SOCKET": f'"{self.rpc_socket}"',
            "CTL_SOCKET": f'"unix:{self.sockdir}/kamailio_ctl"',
            "DISPATCHER_LIST": f'"{self.dispatcher_list}"',
            "ADDRESS_LIST": f'"{self.address_list}"',
            "DS_PING_INTERVAL": 1,
            "DS_RELOAD_DELTA": 1,
            "UDP_CHILDREN": 2,
            "TCP_CHILDREN": 2,
            "LOG_LEVEL": self.log_level,
        }
        values.update(self.defines)
        lines = ["# rendered by tests/kamailio/kamailio_harness.py"]
        for name, value in values.items():
            lines.append(f"#!define {name}" if value is None else f"#!define {name} {value}")
        self.local_cfg.write_text("\n".join(lines) + "\n")
        self.write_dispatcher_list()
        addr = ["# group address mask port tag"]
        addr += [f"1 {ip} 32 0 trunk-{i}" for i, ip in enumerate(self.carriers)]
        addr += [f"2 {ip} 32 0 worker-{i}" for i, ip in enumerate(self.worker_group)]
        self.address_list.write_text("\n".join(addr) + "\n")

    def write_dispatcher_list(self) -> None:
        body = ["# setid uri flags priority attrs"] + [w.list_line() for w in self.workers]
        self.dispatcher_list.write_text("\n".join(body) + "\n")

    def command(self, *extra: str) -> list[str]:
        return [KAMAILIO, "-f", str(self.cfg), "-Y", str(self.rundir), "-m", str(self.shm_mb), "-M", "16",
                *self.extra_args, *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-c"), cwd=self.workdir, capture_output=True, text=True,
                              timeout=30)

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command("-DD", "-E"), cwd=self.workdir, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                self.rpc("core.uptime", timeout=0.5)
                return
            except OSError:
                time.sleep(0.05)
        self._stop()  # not left running behind a failed start: the caller's `finally` never sees it
        raise RuntimeError(f"kamailio RPC did not come up:\n{self.log()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            shutil.rmtree(self.sockdir, ignore_errors=True)

    def _stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5)
        finally:
            # Children outlive a main process that died first: end the whole group (its own session).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rpc(self, method: str, *params: object, timeout: float = 5.0) -> object:
        """One JSON-RPC call over the edge's UNIX datagram socket (jsonrpcs dgram transport)."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind("")  # Linux autobind: an abstract address Kamailio replies to
            s.settimeout(timeout)
            s.sendto(body, str(self.rpc_socket))
            reply = json.loads(s.recv(1 << 17))
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def worker_flags(self) -> dict[str, str]:
        """URI -> two-letter dispatcher state (AP, IP, DX...)."""
        result = self.rpc("dispatcher.list")
        flags: dict[str, str] = {}
        for rec in result.get("RECORDS", []):  # type: ignore[union-attr]
            for target in rec["SET"]["TARGETS"]:
                dest = target["DEST"]
                flags[dest["URI"]] = dest["FLAGS"]
        return flags

    def wait_flags(self, uri: str, wanted: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.worker_flags().get(uri, "")
            if last == wanted:
                return last
            time.sleep(0.1)
        return last


@dataclass
class SippStats:
    returncode: int | None
    successful: int
    failed: int
    incoming: int
    auto_answered: int
    retransmissions: int
    invites: int | None = None

    @property
    def calls_answered(self) -> int:
        """INVITEs a UAS stand-in received (from -trace_counts: SIPp also counts OPTIONS probes as
        incoming calls, auto-answered or, when one races a call, failed)."""
        if self.invites is not None:
            return self.invites
        return self.incoming - self.auto_answered


def read_stats(csv_path: Path, returncode: int | None = None) -> SippStats:
    rows = list(csv.reader(csv_path.open(newline=""), delimiter=";"))
    if len(rows) < 2:
        return SippStats(returncode, 0, 0, 0, 0, 0)
    header, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(header)}

    def get(name: str) -> int:
        try:
            return int(last[col[name]])
        except (KeyError, ValueError, IndexError):
            return 0

    return SippStats(returncode, get("SuccessfulCall(C)"), get("FailedCall(C)"), get("IncomingCall(C)"),
                     get("AutoAnswered(C)"), get("Retransmissions(C)"))


def read_invites(counts_path: Path) -> int:
    """INVITEs received, from the last row of a SIPp -trace_counts file (0 if it never wrote one)."""
    if not counts_path.exists():
        return 0
    rows = list(csv.reader(counts_path.open(newline=""), delimiter=";"))
    if len(rows) < 2:
        return 0
    header, last = rows[0], rows[-1]
    return sum(int(last[i]) for i, name in enumerate(header)
               if name.endswith("_INVITE_Recv") and i < len(last) and last[i].isdigit())


class SippUas:
    """A SIPp UAS in the foreground (no -bg), so it can be killed and restarted on the same port."""

    def __init__(self, workdir: Path, name: str, host: str, port: int | None = None,
                 scenario: str = "uas-worker-echo.xml", extra: Iterable[str] = (),
                 auto_answer: bool = True) -> None:
        self.workdir, self.name, self.host = workdir, name, host
        self.auto_answer = auto_answer
        self.extra = list(extra)
        self.port = port or free_port(host)
        self.media_port = free_media_port(host)
        self.scenario = scenario
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.pids: list[int] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def csv_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.csv"

    def start(self) -> SippUas:
        self.runs += 1
        cmd = [SIPP, "-sf", str(scenario_path(self.scenario)), "-i", self.host, "-p", str(self.port),
               "-mp", str(self.media_port), *(["-aa"] if self.auto_answer else []), "-nostdin",
               "-trace_stat", "-stf", str(self.csv_path), "-trace_counts",
               "-fd", "1", "-max_socket", "2048", *self.extra]
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pids.append(self.proc.pid)
        log.close()
        # SIPp binds within a few ms; give it a moment so the first probe finds it.
        time.sleep(0.2)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> SippStats:
        """Stop and return the cumulative statistics (see stop_all)."""
        return stop_all([self])[0]

    def stats(self) -> SippStats:
        """Cumulative over every run of this stand-in (it may have been killed and restarted)."""
        total = SippStats(None, 0, 0, 0, 0, 0, 0)
        for run in range(1, self.runs + 1):
            path = self.workdir / f"{self.name}-{run}.csv"
            if path.exists():
                s = read_stats(path)
                total = SippStats(None, total.successful + s.successful, total.failed + s.failed,
                                  total.incoming + s.incoming, total.auto_answered + s.auto_answered,
                                  total.retransmissions + s.retransmissions, total.invites)
        for pid in self.pids:
            counts = self.workdir / f"{Path(self.scenario).stem}_{pid}_counts.csv"
            total.invites = (total.invites or 0) + read_invites(counts)
        return total


def stop_all(stand_ins: Iterable[SippUas]) -> list[SippStats]:
    """Let the last calls finish their timewait and SIPp write one more periodic row (-fd 1), then
    stop. SIPp writes no final row on SIGTERM and ignores SIGUSR1 in the foreground, so the periodic
    row written after the last call is the final count."""
    stand_ins = list(stand_ins)
    if any(u.proc and u.proc.poll() is None for u in stand_ins):
        time.sleep(1.7)
    for u in stand_ins:
        u.kill()
    return [u.stats() for u in stand_ins]


def sipp_uac(workdir: Path, name: str, target: str, *, calls: int, rate: float, hold_ms: int = 0,
             host: str = TRUNK_IP, scenario: str = "uac-call-expect-200.xml", timeout_s: int = 60,
             extra: Iterable[str] = (), background: bool = False) -> subprocess.Popen[bytes] | SippStats:
    """Place `calls` calls at `rate` calls/s; wait and return the final statistics (or the process)."""
    csv_path = workdir / f"{name}.csv"
    cmd = [SIPP, target, "-sf", str(scenario_path(scenario)), "-s", "1000", "-i", host,
           "-p", str(free_port(host)), "-mp", str(free_media_port(host)), "-r", str(rate), "-m", str(calls),
           "-d", str(hold_ms), "-nostdin", "-trace_stat", "-stf", str(csv_path), "-fd", "1",
           "-timeout", f"{timeout_s}s", "-timeout_error", "-max_socket", "2048", *extra]
    log = (workdir / f"{name}.log").open("ab")
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    if background:
        return proc
    return finish_uac(proc, csv_path, timeout_s + 30)


def finish_uac(proc: subprocess.Popen[bytes], csv_path: Path, timeout: float = 90) -> SippStats:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    return read_stats(csv_path, proc.returncode)


def sip_request(target: tuple[str, int], method: str = "OPTIONS", *, src: str = TRUNK_IP,
                user_agent: str | None = None, extra_headers: str = "", body: str = "",
                raw: bytes | None = None, timeout: float = 1.0, max_forwards: int = 70) -> str | None:
    """Send one SIP request over UDP from src and return the first reply's status line (or None)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        port = s.getsockname()[1]
        if raw is None:
            branch = f"z9hG4bK{random.getrandbits(48):x}"
            ua = f"User-Agent: {user_agent}\r\n" if user_agent else ""
            raw = (f"{method} sip:1000@{target[0]}:{target[1]} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {src}:{port};branch={branch};rport\r\n"
                   f"From: <sip:probe@{src}>;tag={random.getrandbits(32):x}\r\n"
                   f"To: <sip:1000@{target[0]}>\r\n"
                   f"Call-ID: {random.getrandbits(64):x}@{src}\r\n"
                   f"CSeq: 1 {method}\r\n"
                   f"Contact: <sip:probe@{src}:{port}>\r\n"
                   f"Max-Forwards: {max_forwards}\r\n{ua}{extra_headers}"
                   f"Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()
        s.sendto(raw, target)
        try:
            while True:
                data, _ = s.recvfrom(65535)
                line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                if " 100 " in line:
                    continue
                return data.decode(errors="replace")
        except TimeoutError:
            return None
