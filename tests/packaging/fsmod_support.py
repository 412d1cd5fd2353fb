"""A real FreeSWITCH with a chosen mod_audio_stream build, a SIPp caller whose RTP lands in Python, and a
WebSocket server that answers the module the way the gateway does (shared by tests/packaging and
benchmarks/freeswitch_worker.py).

FreeSWITCH runs the project's freeswitch-conf/ with the deployment values of vars.xml rewritten for a
127.0.0.x address of its own; the SIP profile's ACL admits the caller's address. Every path is a flag, so
instances run side by side with other tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FS_CONF = ROOT / "freeswitch-conf"
PACKAGING = ROOT / "packaging" / "mod_audio_stream"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
FS_PREFIX = Path(os.environ.get("FREESWITCH_PREFIX", "/opt/fs"))
FS_BIN = Path(os.environ.get("FREESWITCH_BIN", FS_PREFIX / "bin" / "freeswitch"))
FS_MODS = FS_PREFIX / "lib" / "freeswitch" / "mod"
EDITIONS = FS_PREFIX / "lib" / "freeswitch" / "mod-editions"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"
ESL_PASSWORD = "fsmod-test"


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_freeswitch() -> bool:
    return FS_BIN.is_file() and (FS_PREFIX / "lib" / "pkgconfig" / "freeswitch.pc").is_file()


# ------------------------------------------------------------------------------------------ the build
def build_cache_dir() -> Path:
    """Outside the git tree, kept between runs: /var/cache/aivg-build when writable, else ~/.cache."""
    configured = os.environ.get("AIVG_BUILD_CACHE")
    if configured:
        return Path(configured)
    system = Path("/var/cache/aivg-build")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aivg-build"


def default_source() -> Path:
    name = re.search(r"^TARBALL=(.+)$", (PACKAGING / "SOURCE").read_text(), re.M)
    assert name, "SOURCE has no TARBALL"
    return ROOT.parent / "shared" / "freeswitch" / "src" / name.group(1).strip()


def build_patched_deb() -> Path:
    """Run build-deb.sh into a cache folder keyed by the source, the patches and the script."""
    source = default_source()
    h = hashlib.sha256()
    h.update(source.read_bytes())
    for p in sorted((PACKAGING / "patches").glob("*.patch")) + [PACKAGING / "SOURCE", PACKAGING / "build-deb.sh"]:
        h.update(p.name.encode() + p.read_bytes())
    out = build_cache_dir() / f"mod_audio_stream-{h.hexdigest()[:16]}"
    result = subprocess.run([str(PACKAGING / "build-deb.sh"), "--source", str(source), "--out", str(out),
                             "--freeswitch-pkgconfig", str(FS_PREFIX / "lib" / "pkgconfig")],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"build-deb.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def patched_module_so() -> Path:
    deb = build_patched_deb()
    unpacked = deb.parent / "unpacked"
    so = next(unpacked.rglob("mod_audio_stream.so"), None) if unpacked.is_dir() else None
    if so is None or so.stat().st_mtime < deb.stat().st_mtime:
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        so = next(unpacked.rglob("mod_audio_stream.so"))
    return so


def edition_so(edition: str) -> Path:
    """'patched' (built here), 'voxcom' (the stock fork) or 'upstream' (amigniter, file mode)."""
    return patched_module_so() if edition == "patched" else EDITIONS / edition / "mod_audio_stream.so"


# ------------------------------------------------------------------------------------------ FreeSWITCH
@dataclass
class FreeSwitch:
    ip: str
    module: Path
    caller_ip: str
    stream_url: str
    workdir: Path
    sip_port: int = 0
    esl_port: int = 0
    rtp_ports: tuple[int, int] = (0, 0)
    proc: subprocess.Popen[bytes] | None = None
    extra_vars: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 30.0) -> None:
        self.sip_port = free_port(self.ip, socket.SOCK_DGRAM)
        self.esl_port = free_port(self.ip)
        conf = self.workdir / "conf"
        shutil.copytree(FS_CONF, conf)
        values = {
            "private_ip": self.ip, "sip_port": str(self.sip_port), "kamailio_acl_cidr": f"{self.caller_ip}/32",
            "kamailio_edge": f"{self.caller_ip}:5062", "rtp_start_port": str(self.rtp_ports[0]),
            "rtp_end_port": str(self.rtp_ports[1]), "gateway_stream_url": self.stream_url,
            "esl_port": str(self.esl_port), "esl_password": ESL_PASSWORD, "esl_acl_cidr": "127.0.0.0/8",
            "log_level": "info", **self.extra_vars,
        }
        text = (conf / "vars.xml").read_text()
        for name, value in values.items():
            text, n = re.subn(rf'data="{name}=[^"]*"', f'data="{name}={value}"', text)
            assert n == 1, f"vars.xml has no {name}"
        (conf / "vars.xml").write_text(text)
        mods = self.workdir / "mod"
        mods.mkdir()
        for m in FS_MODS.iterdir():
            if m.name != "mod_audio_stream.so":
                (mods / m.name).symlink_to(m)
        (mods / "mod_audio_stream.so").symlink_to(self.module)
        dirs = {d: self.workdir / d for d in ("log", "db", "run", "cache", "storage", "rec", "sounds", "temp")}
        for d in dirs.values():
            d.mkdir()
        self.proc = subprocess.Popen(
            [str(FS_BIN), "-nf", "-nc", "-nonat", "-conf", str(conf), "-log", str(dirs["log"]), "-db", str(dirs["db"]),
             "-run", str(dirs["run"]), "-cache", str(dirs["cache"]), "-storage", str(dirs["storage"]),
             "-recordings", str(dirs["rec"]), "-sounds", str(dirs["sounds"]), "-temp", str(dirs["temp"]),
             "-mod", str(mods)],
            stdout=(self.workdir / "stdout.log").open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"FreeSWITCH exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if "is ready" in self.api_sync("status") and f"{self.ip}:{self.sip_port}" in self.api_sync("sofia status"):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"FreeSWITCH not ready in {timeout} s: {self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        logs = list((self.workdir / "log").glob("*.log")) + [self.workdir / "stdout.log"]
        return "\n".join(p.read_text(errors="replace")[-n:] for p in logs if p.exists())

    def api_sync(self, cmd: str, timeout: float = 5.0) -> str:
        """One `api` over a fresh ESL connection (blocking; used outside the event loop and in teardown)."""
        with socket.create_connection((self.ip, self.esl_port), timeout=timeout) as s:
            f = s.makefile("rb")

            def read_msg() -> tuple[dict[str, str], bytes]:
                headers: dict[str, str] = {}
                while (line := f.readline().decode().rstrip("\n")):
                    k, _, v = line.partition(": ")
                    headers[k] = v
                body = f.read(int(headers["Content-Length"])) if "Content-Length" in headers else b""
                return headers, body

            read_msg()  # auth/request
            s.sendall(f"auth {ESL_PASSWORD}\n\n".encode())
            h, _ = read_msg()
            if not h.get("Reply-Text", "").startswith("+OK"):
                raise OSError(f"ESL auth refused: {h}")
            s.sendall(f"api {cmd}\n\n".encode())
            while True:
                h, body = read_msg()
                if h.get("Content-Type") == "api/response":
                    return body.decode(errors="replace")

    def calls_count(self) -> int:
        m = re.search(r"(\d+) total", self.api_sync("show calls count"))
        return int(m.group(1)) if m else -1

    def channels(self) -> list[dict]:
        return json.loads(self.api_sync("show channels as json")).get("rows") or []

    def terminate(self, timeout: float) -> bool:
        """SIGTERM; True if it exited within `timeout`. SIGKILL afterwards in any case."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


# ------------------------------------------------------------------------------------------ RTP at the caller
ULAW_SILENCE = 0xFF


def ulaw_to_linear(b: int) -> int:
    b = ~b & 0xFF
    t = ((b & 0x0F) << 3) + 0x84
    t <<= (b & 0x70) >> 4
    return (0x84 - t) if b & 0x80 else (t - 0x84)


_ULAW = [ulaw_to_linear(i) for i in range(256)]


def linear_to_ulaw(s: int) -> int:
    s = max(-32635, min(32635, s))
    sign = 0x80 if s < 0 else 0
    if s < 0:
        s = -s
    s += 0x84
    exp = 7
    mask = 0x4000
    while not s & mask and exp > 0:
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def ulaw_rms(payload: bytes) -> float:
    if not payload:
        return 0.0
    return (sum(_ULAW[b] ** 2 for b in payload) / len(payload)) ** 0.5


@dataclass
class RtpPacket:
    t: float
    seq: int
    ts: int
    ssrc: int
    payload: bytes


class RtpCaller(asyncio.DatagramProtocol):
    """One UDP socket that every call's SDP points at: packets are grouped by the FreeSWITCH source address
    (one RTP port per call). `speak` sends u-law RTP back to that source, as the caller's phone would."""

    def __init__(self, on_packet: Callable[[tuple[str, int], RtpPacket], None] | None = None) -> None:
        self.streams: dict[tuple[str, int], list[RtpPacket]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.on_packet = on_packet
        self.keep = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        pkt = RtpPacket(time.monotonic(), int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"),
                        int.from_bytes(data[8:12], "big"), data[12:])
        if self.keep:
            self.streams.setdefault(addr, []).append(pkt)
        else:
            self.streams.setdefault(addr, [])
        if self.on_packet:
            self.on_packet(addr, pkt)

    def send(self, addr: tuple[str, int], seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0) -> None:
        assert self.transport is not None
        header = bytes([0x80, pt]) + (seq & 0xFFFF).to_bytes(2, "big") + (ts & 0xFFFFFFFF).to_bytes(4, "big") + \
            ssrc.to_bytes(4, "big")
        self.transport.sendto(header + payload, addr)


async def open_rtp_caller(ip: str, **kw: object) -> tuple[RtpCaller, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: RtpCaller(**kw), local_addr=(ip, 0))  # type: ignore[arg-type]
    return proto, transport.get_extra_info("sockname")[1]


# ------------------------------------------------------------------------------------------ SIPp caller
def sipp_call(workdir: Path, name: str, fs: FreeSwitch, *, scenario: str, rtp_port: int, calls: int = 1,
              rate: float = 10, hold_ms: int = 1000, service: str = "1000", timeout_s: int = 30,
              extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """Start SIPp as the carrier towards FreeSWITCH; its SDP sends FreeSWITCH's RTP to `rtp_port`."""
    log = (workdir / f"{name}.log").open("ab")
    cmd = [SIPP, f"{fs.ip}:{fs.sip_port}", "-sf", str(SCENARIOS / scenario), "-s", service, "-i", fs.caller_ip,
           "-p", str(free_port(fs.caller_ip, socket.SOCK_DGRAM)), "-mi", fs.caller_ip,
           "-mp", str(free_port(fs.caller_ip, socket.SOCK_DGRAM)), "-key", "rtp_port", str(rtp_port),
           "-m", str(calls), "-r", str(rate), "-l", str(calls), "-d", str(hold_ms), "-nostdin",
           "-timeout", f"{timeout_s}s", "-timeout_error", "-max_socket", "4096", "-trace_err",
           "-error_file", str(workdir / f"{name}.errors"), *extra]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout)


# ------------------------------------------------------------------------------------------ the gateway's side
def stream_audio_message(pcm: bytes, rate: int = 8000) -> str:
    """A `streamAudio` reply as the gateway sends it (raw L16 little-endian at the stream's rate)."""
    return json.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": rate,
                                                      "audioData": base64.b64encode(pcm).decode()}})


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    import math
    n = int(seconds * rate)
    return b"".join(int(amplitude * math.sin(2 * math.pi * freq * i / rate)).to_bytes(2, "little", signed=True)
                    for i in range(n))


@dataclass
class StreamSession:
    path: str
    metadata: dict
    ws: object
    opened: float
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    frames_in: int = 0


Behaviour = Callable[[StreamSession], "asyncio.Future[None] | object"]


class StreamServer:
    """The gateway's end of mod_audio_stream on a loopback port: accepts the module's WebSocket, reads the
    metadata text frame, counts caller frames, and runs `behaviour(session)` (which sends the replies)."""

    def __init__(self, ip: str, behaviour: Callable[[StreamSession], object]) -> None:
        self.ip = ip
        self.port = 0
        self.behaviour = behaviour
        self.sessions: asyncio.Queue[StreamSession] = asyncio.Queue()
        self.all: list[StreamSession] = []
        self._server: object | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.ip}:{self.port}/stream"

    async def start(self) -> None:
        from websockets.asyncio.server import serve
        self._server = await serve(self._handle, self.ip, 0, max_size=2**22, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()  # type: ignore[attr-defined]
            await self._server.wait_closed()  # type: ignore[attr-defined]

    async def _handle(self, ws: object) -> None:
        from websockets.exceptions import ConnectionClosed
        first = await ws.recv()  # type: ignore[attr-defined]
        session = StreamSession(ws.request.path, json.loads(first) if isinstance(first, str) else {}, ws,  # type: ignore[attr-defined]
                                time.monotonic())
        self.all.append(session)
        self.sessions.put_nowait(session)
        task = asyncio.ensure_future(self.behaviour(session))  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            async for msg in ws:  # type: ignore[attr-defined]
                if isinstance(msg, bytes):
                    session.frames_in += 1
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()
            task.cancel()


def make_temp_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
