"""Raw SIP helpers for the security suite: addresses, a counting worker stand-in, a listener that must
stay silent, request builders and sipvicious runs with a chosen User-Agent."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

# This suite's loopback addresses (127.0.0.60-79), so it runs beside the other suites.
EDGE_IP = "127.0.0.60"
TRUNK_IP = "127.0.0.61"
STRANGER_IP = "127.0.0.62"
FLOODER_IP = "127.0.0.63"
SCANNER_IP = "127.0.0.64"
VICTIM_IP = "127.0.0.65"
WORKER_IPS = ("127.0.0.66", "127.0.0.67")
TCP_ATTACKER_IP = "127.0.0.68"

SDP = ("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def header(raw: bytes, name: str) -> str:
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode(errors="replace").partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def all_headers(raw: bytes, name: str) -> list[str]:
    out = []
    for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.decode(errors="replace").partition(":")
        if key.strip().lower() == name.lower():
            out.append(value.strip())
    return out


@dataclass
class Received:
    method: str
    call_id: str
    raw: bytes


@dataclass
class CountingWorker:
    """A FreeSWITCH stand-in on UDP: answers OPTIONS probes 200 (so the edge keeps it active), INVITEs
    486 and anything else 200, and records every request except the probes."""

    host: str
    port: int = 0
    received: list[Received] = field(default_factory=list)

    def start(self) -> CountingWorker:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, self.port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def calls(self) -> set[str]:
        return {r.call_id for r in self.received}

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            first = data.split(b"\r\n", 1)[0].decode(errors="replace")
            if first.startswith("SIP/2.0"):
                continue
            method = first.split(" ", 1)[0]
            if method != "OPTIONS":
                self.received.append(Received(method, header(data, "Call-ID"), data))
            if method == "ACK":
                continue
            code = "486 Busy Here" if method == "INVITE" else "200 OK"
            to = header(data, "To")
            if ";tag=" not in to:
                to += ";tag=w" + format(random.getrandbits(32), "x")
            vias = "".join(f"Via: {v}\r\n" for v in all_headers(data, "Via"))
            reply = (f"SIP/2.0 {code}\r\n{vias}From: {header(data, 'From')}\r\nTo: {to}\r\n"
                     f"Call-ID: {header(data, 'Call-ID')}\r\nCSeq: {header(data, 'CSeq')}\r\n"
                     "Content-Length: 0\r\n\r\n")
            try:
                self.sock.sendto(reply.encode(), addr)
            except OSError:
                pass


class SilentListener:
    """A UDP+TCP listener on a victim address: anything it receives is a relay the edge should not do."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.udp.settimeout(0.2)
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(16)
        self.tcp.settimeout(0.2)
        self.got: list[bytes] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._udp, daemon=True),
                         threading.Thread(target=self._tcp, daemon=True)]
        for t in self._threads:
            t.start()

    def _udp(self) -> None:
        while not self._stop.is_set():
            try:
                self.got.append(self.udp.recv(65535))
            except (TimeoutError, OSError):
                continue

    def _tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            self.got.append(b"TCP connection")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.udp.close()
        self.tcp.close()


def request(method: str, ruri: str, *, src: tuple[str, int], call_id: str | None = None, to_tag: str = "",
            route: str = "", extra: str = "", body: str = "", content_type: str = "application/sdp",
            contact: bool = True, cseq: str | None = None, user_agent: str = "Twilio Gateway") -> bytes:
    """A well-formed request (every field overridable) as a trunk or worker would send it over UDP."""
    host, port = src
    call_id = call_id or f"{random.getrandbits(64):x}@{host}"
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{random.getrandbits(48):x};rport",
             f"From: <sip:+15550001111@{host}>;tag={random.getrandbits(32):x}",
             f"To: <{ruri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq or '1 ' + method}", "Max-Forwards: 70",
             f"User-Agent: {user_agent}"]
    if route:
        lines.append(f"Route: {route}")
    if contact:
        lines.append(f"Contact: <sip:+15550001111@{host}:{port}>")
    if body:
        lines.append(f"Content-Type: {content_type}")
    head = "\r\n".join(lines) + "\r\n" + extra
    return (head + f"Content-Length: {len(body.encode())}\r\n\r\n" + body).encode()


def send(raw: bytes, target: tuple[str, int], *, src: socket.socket, timeout: float = 0.0) -> str | None:
    """Send one datagram from src; with a timeout, return the first final reply's status line."""
    src.sendto(raw, target)
    if not timeout:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        src.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = src.recv(65535)
        except TimeoutError:
            return None
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if not line.startswith("SIP/2.0 1"):
            return line
    return None


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


_SIPVICIOUS = """
import sys
import tempfile
import sipvicious.libs.svhelper as helper
ua = sys.argv.pop(1)
original = helper.makeRequest
def disguised(*args, **kwargs):
    if ua != "stock":
        kwargs["useragent"] = ua
    return original(*args, **kwargs)
helper.makeRequest = disguised
tool = sys.argv.pop(1)
if tool == "svmap":
    from sipvicious.svmap import main
else:
    from sipvicious.svwar import main
sys.argv[0] = "sipvicious_" + tool
sys.exit(main())
"""


def sipvicious(tool: str, *args: str, user_agent: str = "stock", timeout: float = 90) -> str:
    """Run svmap/svwar (the dev dependency) with its stock User-Agent or a disguised one; stdout+stderr."""
    run = subprocess.run([sys.executable, "-c", _SIPVICIOUS, user_agent, tool, *args], capture_output=True,
                         text=True, timeout=timeout, cwd=tempfile.gettempdir())
    return run.stdout + run.stderr
