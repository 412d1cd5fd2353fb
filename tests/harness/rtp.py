"""A telephone's media side on loopback: sends PCMU every 20 ms (speech or silence), records every RTP
packet it receives with its arrival time, and tells speech from silence in what it heard.

SIPp does the signalling; its SDP points c=/m= at this endpoint (see harness.sipp). The endpoint learns
where to send from the SDP answer (``set_remote``) or, failing that, from the first packet it receives
(symmetric RTP, as FreeSWITCH does with rtp-autoadjust).
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.net import free_port

FRAME_MS = 20
FRAME_BYTES = 160  # PCMU, 8 kHz
PCMU_SILENCE = b"\xff" * FRAME_BYTES
SIPP_PCAP_DIR = Path("/usr/share/sip-tester")


def _ulaw_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int16)
    for i in range(256):
        u = ~i & 0xFF
        sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
        sample = ((mantissa << 3) + 0x84) << exponent
        sample -= 0x84
        table[i] = -sample if sign else sample
    return table


ULAW_DECODE = _ulaw_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 -> G.711 u-law (the reference segment encoder, vectorised)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    x = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(x)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def speech_pcmu(text: str, voice: str = "en-us", speed: int = 160) -> bytes:
    """espeak-ng speech as 8 kHz PCMU (sox does the resampling and the law)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                         capture_output=True, timeout=30).stdout
    raw = subprocess.run(["sox", "-t", "wav", "-", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", "-"],
                         input=wav, check=True, capture_output=True, timeout=30).stdout
    return raw


def frame_level_dbfs(payload: bytes) -> float:
    samples = ulaw_decode(payload).astype(np.float64)
    rms = float(np.sqrt(np.mean(samples * samples))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1.0) / 32768.0)


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux <asm-generic/socket.h>; SCM_ is the same
_CMSG_SPACE = socket.CMSG_SPACE(16)  # struct timespec


def _kernel_arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """The packet's kernel receive time (CLOCK_REALTIME in the control message) on the monotonic clock."""
    mono, real = time.monotonic(), time.time()
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return mono - max(0.0, real - (sec + nsec / 1e9))
    return mono


@dataclass
class Packet:
    t: float  # arrival in the kernel, on the time.monotonic() clock
    seq: int
    ts: int
    pt: int
    marker: bool
    ssrc: int
    payload: bytes
    src: tuple[str, int]


@dataclass
class Segment:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class RtpEndpoint:
    """One side's media: a UDP socket on host, a 20 ms sender thread and a receiver thread."""

    def __init__(self, host: str, port: int | None = None, name: str = "rtp") -> None:
        self.host, self.name = host, name
        self.port = port or free_port(host, tcp=False, span=2)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, self.port))
        self.sock.settimeout(0.1)
        # Arrival times from the kernel (SO_TIMESTAMPNS), not from when this thread got the GIL back: on a
        # loaded test machine the receiver can be starved for half a second, and the packets that waited
        # in the socket buffer meanwhile must not read as a gap in what the peer sent.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.remote: tuple[str, int] | None = None
        self.received: list[Packet] = []
        self.sent_log: list[tuple[float, str]] = []  # (time, what) for speech starts/ends, dtmf
        self._queue: list[tuple[int, bytes]] = []  # (payload type, payload) frames to send next
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.sending = True
        self.speech_end: float | None = None  # when the last queued speech frame went out
        self._threads = [threading.Thread(target=self._recv_loop, daemon=True),
                         threading.Thread(target=self._send_loop, daemon=True)]

    def start(self) -> RtpEndpoint:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)
        self.sock.close()

    def __enter__(self) -> RtpEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_remote(self, host: str, port: int) -> None:
        self.remote = (host, port)

    # -- sending --------------------------------------------------------------------------------

    def say(self, pcmu: bytes) -> float:
        """Queue speech after whatever is queued; returns the expected send duration in seconds."""
        frames = [pcmu[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
                  for i in range(0, len(pcmu), FRAME_BYTES)]
        with self._lock:
            self._queue.extend((0, f) for f in frames)
            self._queue.append((-1, b""))  # marker: speech ended here
        return len(frames) * FRAME_MS / 1000

    def send_dtmf_pcap(self, digit: str) -> None:
        """Queue the RFC 2833 event packets of SIPp's shipped pcap for digit (payloads as captured,
        sent with this stream's SSRC/sequence; payload type 101 as the SDP offers)."""
        name = {"*": "star", "#": "pound"}.get(digit, digit)
        events = read_pcap_rtp_payloads(SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap")
        with self._lock:
            self._queue.extend((101, p) for p in events)

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _send_loop(self) -> None:
        next_t = time.monotonic()
        dtmf_ts: int | None = None
        while not self._stop.is_set():
            next_t += FRAME_MS / 1000
            with self._lock:
                item = self._queue.pop(0) if self._queue else (0, PCMU_SILENCE)
                if item[0] == -1:
                    self.speech_end = time.monotonic()
                    self.sent_log.append((self.speech_end, "speech-end"))
                    item = self._queue.pop(0) if self._queue else (0, PCMU_SILENCE)
            pt, payload = item
            marker = False
            if pt == 101:
                if dtmf_ts is None:
                    dtmf_ts, marker = self.ts, True
                ts = dtmf_ts
            else:
                if dtmf_ts is not None:
                    dtmf_ts = None
                ts = self.ts
            if self.remote is not None and self.sending:
                header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self.seq & 0xFFFF,
                                     ts & 0xFFFFFFFF, self.ssrc)
                try:
                    self.sock.sendto(header + payload, self.remote)
                except OSError:
                    pass
                self.seq += 1
            self.ts += FRAME_BYTES
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.monotonic()

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, src = self.sock.recvmsg(4096, _CMSG_SPACE)
            except (TimeoutError, OSError):
                continue
            now = _kernel_arrival(ancdata)
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            cc = data[0] & 0x0F
            seq, ts, ssrc = struct.unpack("!HII", data[2:12])
            payload = data[12 + 4 * cc:]
            self.received.append(Packet(now, seq, ts, data[1] & 0x7F, bool(data[1] & 0x80), ssrc,
                                        payload, src))
            if self.remote is None:
                self.remote = src

    # -- what was heard -----------------------------------------------------------------------------

    def audio_packets(self, since: float = 0.0, until: float = float("inf")) -> list[Packet]:
        return [p for p in list(self.received) if p.pt in (0, 8) and since <= p.t <= until]

    def speech_segments(self, since: float = 0.0, until: float = float("inf"), threshold_dbfs: float = -40.0,
                        bridge_s: float = 0.3) -> list[Segment]:
        """Runs of speech frames (level above threshold), gaps shorter than bridge_s joined."""
        segments: list[Segment] = []
        for p in self.audio_packets(since, until):
            if p.pt != 0 or frame_level_dbfs(p.payload) <= threshold_dbfs:
                continue
            if segments and p.t - segments[-1].end <= bridge_s:
                segments[-1].end = p.t
            else:
                segments.append(Segment(p.t, p.t))
        return segments

    def speech_seconds(self, since: float = 0.0, until: float = float("inf"),
                       threshold_dbfs: float = -40.0) -> float:
        return FRAME_MS / 1000 * sum(1 for p in self.audio_packets(since, until)
                                     if p.pt == 0 and frame_level_dbfs(p.payload) > threshold_dbfs)

    def first_speech_after(self, t: float, threshold_dbfs: float = -40.0) -> float | None:
        for p in self.audio_packets(since=t):
            if p.pt == 0 and frame_level_dbfs(p.payload) > threshold_dbfs:
                return p.t
        return None

    def longest_gap(self, since: float, until: float) -> float:
        """Longest time without any RTP packet arriving within [since, until] (edges included)."""
        times = [since] + [p.t for p in self.received if since <= p.t <= until] + [until]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def write_wav(self, path: Path) -> None:
        import wave

        pcm = np.concatenate([ulaw_decode(p.payload) for p in self.audio_packets() if p.pt == 0] or
                             [np.zeros(0, np.int16)])
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(pcm.astype("<i2").tobytes())


def read_pcap_rtp_payloads(path: Path) -> list[bytes]:
    """RTP payloads of every UDP packet in a classic libpcap file (Ethernet or Linux cooked)."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 0: 4, 101: 0}.get(linktype, 14)
    off = 24
    payloads: list[bytes] = []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16: off + 16 + incl]
        off += 16 + incl
        ip = frame[link_len:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp = ip[ihl:]
        rtp = udp[8:]
        if len(rtp) >= 12 and rtp[0] >> 6 == 2:
            payloads.append(rtp[12 + 4 * (rtp[0] & 0x0F):])
    return payloads
