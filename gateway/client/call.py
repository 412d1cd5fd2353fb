"""`gateway call`: place one simulated call exactly as mod_audio_stream would, record the reply, print a
JSON summary.

On the wire it is libwsc: the same upgrade request (no space after header colons, Origin, no extensions,
token in an extra `Authorization` header as STREAM_EXTRA_HEADERS adds it), one metadata text frame, then
masked 20 ms L16 frames paced at real time with the first two sent together. Like a real channel it keeps
streaming (silence) while it waits: first for the greeting to finish, then for the agent's answer.
When the gateway closes the stream it answers with a close frame and, like libwsc, does not close TCP:
whether the gateway then drops TCP is reported (`server_closed_tcp`).

`place_call()` is the reusable core (the load generator runs hundreds at once in one event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from gateway.audio.resample import float_to_pcm16
from gateway.client import wsframe as wsf
from gateway.proto.audio_stream import StreamProtocolError, parse_stream_audio

FRAME_MS = 20
SPEECH_RMS = 300.0  # frames above this count as caller speech (end of speech = last such frame sent)


@dataclass
class CallSummary:
    url: str
    uuid: str
    rate: int
    http_status: int | None = None
    frames_sent: int = 0
    frames_received: int = 0
    caller_speech_s: float = 0.0
    greeting_s: float = 0.0
    reply_s: float = 0.0
    first_reply_latency_ms: float | None = None  # end of caller speech -> first reply audio received
    reply_interarrival_ms: dict[str, float] = field(default_factory=dict)  # pacing of reply messages
    send_lateness_ms: dict[str, float] = field(default_factory=dict)  # our own pacing (load generator health)
    transcripts: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None  # "gateway" | "caller"
    server_closed_tcp: bool | None = None
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    # Not in the JSON: raw material for tests and the recorder.
    reply_pcm: bytes = field(default=b"", repr=False)
    reply_arrivals: list[tuple[float, int]] = field(default_factory=list, repr=False)  # (t, bytes)
    # When each binary frame was handed to the socket, in order: a measure of latency against the real
    # send times, not a schedule reconstructed afterwards (which a late send would skew).
    send_times: list[float] = field(default_factory=list, repr=False)
    speech_end_t: float | None = field(default=None, repr=False)  # send time of the last voiced frame

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("reply_pcm", "reply_arrivals", "send_times", "speech_end_t"):
            doc.pop(key)
        return doc


def load_audio(source: str | Path | np.ndarray | bytes, rate: int) -> np.ndarray:
    """Any common WAV/FLAC/OGG (any rate, channels, sample format) or raw L16 bytes -> int16 mono."""
    if isinstance(source, np.ndarray):
        return source.astype(np.int16, copy=False)
    if isinstance(source, bytes | bytearray):
        return np.frombuffer(bytes(source), dtype="<i2")
    import soundfile

    data, src_rate = soundfile.read(str(source), dtype="float64", always_2d=True)
    return float_to_pcm16(data.mean(axis=1), int(src_rate), rate)


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    import soundfile

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.frombuffer(pcm, dtype="<i2"), rate, subtype="PCM_16")


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"n": int(a.size), "mean": round(float(a.mean()), 2), "p50": round(float(np.percentile(a, 50)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, summary: CallSummary,
                 rate: int) -> None:
        self.reader, self.writer, self.s, self.rate = reader, writer, summary, rate
        self.parser = wsf.FrameParser()
        self.last_audio_t: float | None = None
        self.server_closed = asyncio.Event()
        self.eof = asyncio.Event()
        self.sent_close = False
        self.reply_parts: list[bytes] = []

    def send(self, opcode: int, payload: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(wsf.encode_frame(opcode, payload))

    async def read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for frame in self.parser.feed(data):
                    self._on_frame(frame)
        except (ConnectionError, wsf.FrameError) as exc:
            self.s.errors.append(f"read: {exc}")
        finally:
            self.eof.set()

    def _on_frame(self, frame: wsf.Frame) -> None:
        now = time.monotonic()
        if frame.opcode == wsf.OP_TEXT:
            text = frame.payload.decode("utf-8", "replace")
            if '"streamAudio"' in text[:40]:
                try:
                    _, pcm = parse_stream_audio(text)
                except StreamProtocolError as exc:
                    self.s.errors.append(exc.reason)
                    return
                self.s.frames_received += 1
                self.s.reply_arrivals.append((now, len(pcm)))
                self.reply_parts.append(pcm)
                self.last_audio_t = now
                return
            try:
                doc = json.loads(text)
            except ValueError:
                doc = {"text": text}
            if isinstance(doc, dict) and doc.get("type") == "transcript":
                self.s.transcripts.append({"role": str(doc.get("role")), "text": str(doc.get("text"))})
            else:
                self.s.events.append(doc if isinstance(doc, dict) else {"value": doc})
        elif frame.opcode == wsf.OP_PING:
            self.send(wsf.OP_PONG, frame.payload)
        elif frame.opcode == wsf.OP_CLOSE:
            if self.s.closed_by is None:
                self.s.closed_by = "gateway" if not self.sent_close else "caller"
                self.s.close_code, self.s.close_reason = frame.close_code, frame.close_reason
            if not self.sent_close:
                # libwsc answers the close and leaves TCP open; the gateway must close it.
                self.sent_close = True
                self.send(wsf.OP_CLOSE, frame.payload[:2] or wsf.close_payload(1000))
            self.server_closed.set()


async def place_call(
    url: str,
    audio: str | Path | np.ndarray | bytes,
    *,
    rate: int = 8000,
    metadata: dict[str, Any] | None = None,
    token: str | None = None,
    wait_for_greeting: bool = True,
    greeting_timeout: float = 10.0,
    quiet_s: float = 0.8,
    reply_timeout: float = 15.0,
    max_duration: float = 120.0,
    connect_timeout: float = 3.0,
    hangup: bool = True,
    raw_request: bytes | None = None,
) -> CallSummary:
    """One call. `audio` is what the caller says; silence is streamed around it as a live channel does.
    `raw_request` replaces the upgrade request (tests feed the captured fixture bytes)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    call_uuid = parts.path.rstrip("/").rsplit("/", 1)[-1]
    s = CallSummary(url=url, uuid=call_uuid, rate=rate)
    t_start = time.monotonic()
    pcm = load_audio(audio, rate)
    frame_len = rate * FRAME_MS // 1000
    n_frames = max(1, -(-len(pcm) // frame_len))
    speech = np.zeros(n_frames * frame_len, dtype=np.int16)
    speech[: len(pcm)] = pcm
    frames = speech.reshape(n_frames, frame_len)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    voiced = np.nonzero(rms > SPEECH_RMS)[0]
    last_voiced = int(voiced[-1]) if voiced.size else -1
    s.caller_speech_s = round(len(pcm) / rate, 3)
    silence = bytes(frame_len * 2)

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
    except (TimeoutError, OSError) as exc:
        s.errors.append(f"connect: {type(exc).__name__}: {exc}")
        return s
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request, key = wsf.upgrade_request(host, port, path, headers)
        writer.write(raw_request if raw_request is not None else request)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), connect_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            s.errors.append(f"upgrade: no response ({type(exc).__name__})")
            return s
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        try:
            s.http_status = int(status_line.split()[1])
        except (IndexError, ValueError):
            s.errors.append(f"upgrade: bad status line {status_line!r}")
            return s
        if s.http_status != 101:
            s.errors.append(f"upgrade refused: {status_line}")
            return s
        if raw_request is None and wsf.accept_key(key).encode() not in head:
            s.errors.append("upgrade: wrong Sec-WebSocket-Accept")
            return s

        conn = _Conn(reader, writer, s, rate)
        if metadata is not None:
            conn.send(wsf.OP_TEXT, json.dumps(metadata).encode())
        read_task = asyncio.create_task(conn.read_loop())
        lateness: list[float] = []
        t0 = time.monotonic()
        index = 0  # frames sent so far; frame i is due at t0 + (i-1)*20 ms (the first two go together)

        async def send_frame(payload: bytes) -> bool:
            nonlocal index
            due = t0 + max(0, index - 1) * FRAME_MS / 1000.0
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(max(0.0, -delay) * 1000.0)
            if conn.server_closed.is_set() or conn.eof.is_set():
                return False
            conn.send(wsf.OP_BINARY, payload)
            s.send_times.append(time.monotonic())
            index += 1
            s.frames_sent += 1
            if index % 25 == 0:
                await writer.drain()
            return True

        def elapsed() -> float:
            return time.monotonic() - t_start

        alive = True
        # 1) the greeting: stream silence until the agent has spoken and gone quiet
        if wait_for_greeting:
            g_start = time.monotonic()
            while alive and elapsed() < max_duration:
                now = time.monotonic()
                if conn.last_audio_t is None and now - g_start > greeting_timeout:
                    break
                if conn.last_audio_t is not None and now - conn.last_audio_t > quiet_s:
                    break
                alive = await send_frame(silence)
            s.greeting_s = round(sum(n for _, n in s.reply_arrivals) / (2 * rate), 3)
        greeting_count = len(s.reply_arrivals)
        # 2) the caller speaks
        for i in range(n_frames):
            if not alive:
                break
            alive = await send_frame(frames[i].astype("<i2").tobytes())
            if i == last_voiced and alive:
                # the send time itself: time.monotonic() here would also count the drain awaited after it
                s.speech_end_t = s.send_times[-1]
        if s.speech_end_t is None:
            s.speech_end_t = time.monotonic()
        # 3) listen (streaming silence) until the answer has finished
        end_t = time.monotonic()
        while alive and elapsed() < max_duration:
            now = time.monotonic()
            replied = len(s.reply_arrivals) > greeting_count
            if replied and conn.last_audio_t is not None and now - conn.last_audio_t > quiet_s:
                break
            if not replied and now - end_t > reply_timeout:
                s.errors.append("no reply audio within the reply timeout")
                break
            alive = await send_frame(silence)
        # 4) hang up like `uuid_kill`: close 1000 "Normal closure"; then see who closes TCP
        if hangup and not conn.server_closed.is_set() and not conn.eof.is_set():
            conn.sent_close = True
            conn.send(wsf.OP_CLOSE, wsf.close_payload(1000, "Normal closure"))
            try:
                await asyncio.wait_for(conn.server_closed.wait(), 2.0)
            except TimeoutError:
                s.errors.append("gateway did not answer the close frame")
        if conn.server_closed.is_set() or not hangup:
            try:
                await asyncio.wait_for(conn.eof.wait(), 3.0)
            except TimeoutError:
                pass
        s.server_closed_tcp = conn.eof.is_set()
        read_task.cancel()
        await asyncio.gather(read_task, return_exceptions=True)

        s.reply_pcm = b"".join(conn.reply_parts)
        s.reply_s = round(len(s.reply_pcm) / (2 * rate), 3)
        after = [t for t, _ in s.reply_arrivals[greeting_count:] if t >= s.speech_end_t]
        if after:
            s.first_reply_latency_ms = round((after[0] - s.speech_end_t) * 1000.0, 1)
        arrivals = [t for t, _ in s.reply_arrivals]
        gaps = [(b - a) * 1000.0 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < 0.5]
        s.reply_interarrival_ms = _stats(gaps)
        s.send_lateness_ms = _stats(lateness)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, OSError):
            pass
        s.duration_s = round(time.monotonic() - t_start, 3)
    return s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway call", description=__doc__.splitlines()[0])
    p.add_argument("wav", help="what the caller says: WAV/FLAC/OGG, any rate or sample format")
    p.add_argument("--protocol", choices=["freeswitch", "twilio"], default="freeswitch",
                   help="speak as mod_audio_stream (default) or as Twilio Media Streams")
    p.add_argument("--twilio-auth-token", help="--protocol twilio: the auth token that signs the upgrade")
    p.add_argument("--dtmf", default="", help="--protocol twilio: digits pressed before speaking")
    p.add_argument("--url", help="ws://host:port/stream/<uuid> (default: --gateway plus a fresh uuid; "
                   "/twilio/stream for --protocol twilio)")
    p.add_argument("--gateway", default="127.0.0.1:8090", help="host:port of `gateway serve` (%(default)s)")
    p.add_argument("--rate", type=int, default=8000, choices=[8000, 16000])
    p.add_argument("--token", help="bearer token (as STREAM_EXTRA_HEADERS would send it)")
    p.add_argument("--caller", default="+15550111")
    p.add_argument("--callee", default="+15550100")
    p.add_argument("--call-id", default="", help="carrier call id (e.g. X-Twilio-CallSid)")
    p.add_argument("--worker", default="fs1")
    p.add_argument("--profile", default="")
    p.add_argument("--no-metadata", action="store_true", help="send no metadata frame")
    p.add_argument("--no-wait-greeting", action="store_true", help="speak at once, over the greeting")
    p.add_argument("--reply-timeout", type=float, default=15.0)
    p.add_argument("--record", help="write the reply audio to this WAV")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.protocol == "twilio":
        return _main_twilio(args)
    url = args.url or f"ws://{args.gateway}/stream/{uuidlib.uuid4()}"
    metadata = None if args.no_metadata else {
        "caller": args.caller, "callee": args.callee,
        "call_id": args.call_id or f"sim-{uuidlib.uuid4().hex[:12]}",
        "worker": args.worker, "profile": args.profile, "rate": args.rate,
    }
    try:
        summary = asyncio.run(place_call(url, args.wav, rate=args.rate, metadata=metadata, token=args.token,
                                         wait_for_greeting=not args.no_wait_greeting,
                                         reply_timeout=args.reply_timeout))
    except (OSError, RuntimeError) as exc:  # unreadable WAV and the like
        print(json.dumps({"errors": [f"{type(exc).__name__}: {exc}"]}))
        return 1
    if args.record:
        write_wav(args.record, summary.reply_pcm, args.rate)
    doc = summary.to_json()
    if args.record:
        doc["recording"] = args.record
    print(json.dumps(doc, indent=2))
    return 0 if not summary.errors and summary.reply_s > 0 else 1


def _main_twilio(args: argparse.Namespace) -> int:
    from gateway.client.twilio_call import place_twilio_call

    if not args.twilio_auth_token:
        print(json.dumps({"errors": ["--protocol twilio needs --twilio-auth-token"]}))
        return 2
    url = args.url or f"ws://{args.gateway}/twilio/stream"
    try:
        summary = asyncio.run(place_twilio_call(
            url, args.wav, auth_token=args.twilio_auth_token, caller=args.caller, called=args.callee,
            profile=args.profile, dtmf=args.dtmf, wait_for_greeting=not args.no_wait_greeting,
            reply_timeout=args.reply_timeout))
    except (OSError, RuntimeError) as exc:
        print(json.dumps({"errors": [f"{type(exc).__name__}: {exc}"]}))
        return 1
    print(json.dumps(summary.to_json(), indent=2))
    return 0 if not summary.errors and summary.reply_s > 0 else 1
