"""Calls per core with the model link counted (issue 17): a bridge with a Realtime WebSocket per call to a
local fake Realtime server, under N concurrent 8 kHz calls; `gateway serve` and Pipecat side by side.

    make bench-deps   # once: Pipecat in .venv-bench (benchmarks/requirements-pipecat.txt)
    .venv/bin/python benchmarks/model_link.py --calls 20 50 100 --rounds 2 --ramp 25 --host 127.0.9.1
    .venv/bin/python benchmarks/model_link.py --bridges gateway --calls 100 --gateway-tree /tmp/old
    .venv/bin/python benchmarks/model_link.py --memory-breakdown --calls 30 --ramp 3 --setup-timeout 400
    .venv/bin/python benchmarks/model_link.py --append-latency 20 40 60 100   # what batching adds

Bridges (`--bridges`, interleaved per load and round): `gateway` (its Twilio Media Streams ingress),
`pipecat` (benchmarks/pipecat_bridge.py, Pipecat 1.14 from .venv-bench), `gateway-fs` (the
mod_audio_stream ingress with benchmarks/media_plane.py's client: not like for like with pipecat). The
bridge is pinned to core 0; the load client and the fake model share core 1. The Twilio client
(`--twilio-client`) speaks Twilio Media Streams to both and plays what comes back as Twilio's buffer would.
The fake speaks the Realtime protocol's GA event names: `session.created` on connect, `session.update` ->
`session.updated` (audio in the output format asked for: mu-law or 24 kHz PCM); appends are counted, not
parsed; every `--reply-every` seconds per call a turn: `input_audio_buffer.speech_started` (a barge-in
when a reply is playing), `speech_stopped`, then a reply of `--reply-ms` in 100 ms
`response.output_audio.delta`s at twice real time, and `response.done`; `response.cancel` ends the reply
with a cancelled `response.done`, a truncate is answered.

Reported per load: call set-up CPU per call (bridge CPU from the first connection until every call's model
session is up, before any caller audio), RSS per call after set-up and at peak, steady-state CPU % of a
core and CPU per call, and on the caller side agent frames heard, underruns and late frames (plus the
gateway's own counters); then the Pipecat / gateway ratios of the invocation. `--memory-breakdown`: where
the gateway's memory per call goes (tracemalloc, see `_traced_gateway`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import media_plane as mp  # noqa: E402 - the sibling script's client and helpers

ROOT = mp.ROOT
PY = sys.executable


# --------------------------------------------------------------------------------------------- fake model
def _fake_model(host: str, expected: int, reply_every: float, reply_ms: int, base: int = 0) -> None:
    import logging

    import uvloop
    import websockets
    from websockets.asyncio.server import serve

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # the gateway's TCP readiness probe
    ulaw = base64.b64encode(bytes([0xFF]) * 800).decode()  # 100 ms of mu-law silence
    pcm24 = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz PCM16 silence (the API's default)
    sessions = [0]
    appends = [0, 0]  # count, characters
    ids = iter(range(1, 1 << 30))
    lags: list[float] = []  # how late each reply delta left the fake against its schedule

    def ev(doc: dict) -> str:
        return json.dumps(doc, separators=(",", ":"))

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        reply: asyncio.Task | None = None
        current = {"resp": "", "item": ""}
        chunk = [pcm24]  # the output format the session asked for: audio/pcmu (the gateway) or PCM 24 kHz
        # As the real service: session.created first (Pipecat waits for it before its session.update).
        await ws.send(ev({"type": "session.created", "event_id": "e",
                          "session": {"type": "realtime", "object": "realtime.session", "id": "sess_bench",
                                      "model": "bench"}}))

        async def speak() -> None:
            try:
                await _speak()
            except websockets.ConnectionClosed:
                pass

        async def _speak() -> None:
            rid, iid = f"resp_{next(ids)}", f"item_{next(ids)}"
            current.update(resp=rid, item=iid)
            created = {"id": rid, "object": "realtime.response", "status": "in_progress"}
            await ws.send(ev({"type": "response.created", "event_id": "e", "response": created}))
            delta_head = ev({"type": "response.output_audio.delta", "event_id": "e", "response_id": rid,
                             "item_id": iid, "output_index": 0, "content_index": 0, "delta": ""})[:-3]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for k in range(max(1, reply_ms // 100)):  # at twice real time, as the real service is faster
                await asyncio.sleep(max(0.0, t0 + k * 0.05 - loop.time()))
                lags.append(loop.time() - (t0 + k * 0.05))
                await ws.send(f'{delta_head}"{chunk[0]}"}}')
            await ws.send(ev({"type": "response.done", "event_id": "e",
                              "response": {"id": rid, "object": "realtime.response", "status": "completed",
                                           "output": []}}))

        async def turns() -> None:
            try:
                await _turns()
            except websockets.ConnectionClosed:
                pass

        async def _turns() -> None:
            await asyncio.sleep(reply_every * (0.5 + (hash(ws) % 1000) / 1000))  # calls out of phase
            n = 0
            while True:
                n += 1
                await ws.send(ev({"type": "input_audio_buffer.speech_started", "event_id": "e",
                                  "audio_start_ms": 0, "item_id": f"in_{n}"}))
                await asyncio.sleep(0.3)
                await ws.send(ev({"type": "input_audio_buffer.speech_stopped", "event_id": "e",
                                  "audio_end_ms": 300, "item_id": f"in_{n}"}))
                nonlocal reply
                if reply is None or reply.done():
                    reply = asyncio.create_task(speak())
                if n % 3 == 0:  # every third reply: the caller talks over it half-way (a barge-in)
                    await asyncio.sleep(reply_ms / 2000)
                    await ws.send(ev({"type": "input_audio_buffer.speech_started", "event_id": "e",
                                      "audio_start_ms": 0, "item_id": f"in_{n}b"}))
                await asyncio.sleep(reply_every)

        turner: asyncio.Task | None = None
        try:
            async for msg in ws:
                if "input_audio_buffer.append" in msg[:120]:  # either key order (the SDK's, Pipecat's)
                    appends[0] += 1
                    appends[1] += len(msg)
                    continue
                doc = json.loads(msg)
                kind = doc.get("type")
                if kind == "session.update":
                    fmt = (((doc.get("session") or {}).get("audio") or {}).get("output") or {}).get("format")
                    if isinstance(fmt, dict) and fmt.get("type") in ("audio/pcmu", "audio/pcma"):
                        chunk[0] = ulaw
                    await ws.send(ev({"type": "session.updated", "event_id": "e",
                                      "session": doc.get("session", {})}))
                    sessions[0] += 1
                    if sessions[0] == base:
                        print("BASE", flush=True)
                    if sessions[0] == expected:
                        print("READY", flush=True)
                    turner = asyncio.create_task(turns())
                elif kind == "response.create":
                    if reply is None or reply.done():
                        reply = asyncio.create_task(speak())
                elif kind == "response.cancel" and reply is not None and not reply.done():
                    reply.cancel()
                    await ws.send(ev({"type": "response.done", "event_id": "e",
                                      "response": {"id": current["resp"], "object": "realtime.response",
                                                   "status": "cancelled", "output": []}}))
                elif kind == "conversation.item.truncate":
                    await ws.send(ev({"type": "conversation.item.truncated", "event_id": "e",
                                      "item_id": doc.get("item_id"), "content_index": 0,
                                      "audio_end_ms": doc.get("audio_end_ms", 0)}))
        except Exception:  # noqa: BLE001 - a closed call is not the benchmark's business
            pass
        finally:
            for task in (reply, turner):
                if task is not None:
                    task.cancel()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with serve(handler, host, 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"PORT {port}", flush=True)
            await stop.wait()
        d = sorted(lags) or [0.0]
        print(json.dumps({"fake_delta_lag_ms": {"p50": round(d[len(d) // 2] * 1000, 1),
                                                "p99": round(d[int(len(d) * 0.99)] * 1000, 1),
                                                "max": round(d[-1] * 1000, 1)},
                          "fake_appends": appends[0], "fake_append_chars": appends[1]}), flush=True)

    uvloop.run(main())


# --------------------------------------------------------------------------------------------- Twilio client
LATE_TOLERANCE_S = 0.02  # a media message arriving more than this after the caller's buffer ran dry is late
REPLY_GAP_S = 1.0  # a longer silence is between two replies, not an underrun inside one


def _twilio_client(host: str, port: int, calls: int, warmup: float, seconds: float, hold: float,
                   token: str, ramp: float = 0.0, pause_after: int = 0, pause_s: float = 0.0) -> dict:
    """N calls speaking Twilio Media Streams to `host:port/twilio/stream`, as Twilio does
    (https://www.twilio.com/docs/voice/media-streams/websocket-messages): the upgrade signed with
    X-Twilio-Signature, `connected`, `start` (mediaFormat audio/x-mulaw 8000 mono), then a 20 ms mu-law
    `media` per call every 20 ms (calls staggered over the 20 ms). What comes back is played as Twilio's
    buffer plays it: media back to back at real time from arrival; a `mark` is echoed once the audio before
    it has played; `clear` empties the buffer. A media message that arrives after the buffer ran dry (more
    than LATE_TOLERANCE_S, less than REPLY_GAP_S: inside a reply) is an underrun, its frames late frames.
    The same client and the same measure for every bridge. `ramp`: new calls per second (0: all at once);
    `pause_after` calls, a pause of `pause_s` (--memory-breakdown's base snapshot)."""
    import uvloop
    from twilio.request_validator import RequestValidator

    from gateway.client.twilio_call import new_sid
    from gateway.client.wsframe import OP_PING, OP_PONG, OP_TEXT, FrameParser, encode_frame, upgrade_request

    path = "/twilio/stream"
    signature = RequestValidator(token).compute_signature(f"ws://{host}:{port}{path}", {})
    measuring = [False]
    stats = {"frames_heard": 0, "late_frames": 0, "underruns": 0, "marks_echoed": 0, "clears": 0,
             "closed": 0}
    account = new_sid("AC")
    mask = b"\x11\x22\x33\x44"

    def text(doc: dict) -> bytes:
        return encode_frame(OP_TEXT, json.dumps(doc, separators=(",", ":")).encode(), mask_key=mask)

    class Call(asyncio.Protocol):
        def __init__(self) -> None:
            self.sid, self.stream = new_sid("CA"), new_sid("MZ")
            self.media = text({"event": "media", "sequenceNumber": "3", "streamSid": self.stream,
                               "media": {"track": "inbound", "chunk": "1", "timestamp": "20",
                                         "payload": base64.b64encode(bytes([0xFF]) * 160).decode()}})
            self.buf = bytearray()  # the upgrade's response head
            self.frames = FrameParser()  # then the server's frames
            self.upgraded = asyncio.get_running_loop().create_future()
            self.transport: asyncio.Transport | None = None
            self.play_end = 0.0
            self.marks: list[tuple[float, str]] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def start_message(self) -> dict:
            return {"event": "start", "sequenceNumber": "1", "streamSid": self.stream, "start": {
                "streamSid": self.stream, "accountSid": account, "callSid": self.sid, "tracks": ["inbound"],
                "customParameters": {"caller": "+15550111", "called": "+15550100"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}

        def connection_lost(self, exc: Exception | None) -> None:
            stats["closed"] += 1
            if not self.upgraded.done():
                self.upgraded.set_result(False)

        def data_received(self, data: bytes) -> None:
            if not self.upgraded.done():
                self.buf += data
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                ok = self.buf.startswith(b"HTTP/1.1 101")
                data = bytes(self.buf[end + 4 :])  # what came after the head: frames
                self.buf.clear()
                self.upgraded.set_result(ok)
                if ok and self.transport is not None:  # as Twilio: `connected` and `start` right away
                    self.transport.write(text({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                    self.transport.write(text(self.start_message()))
            for frame in self.frames.feed(data):
                if frame.opcode == OP_TEXT:
                    self.message(json.loads(frame.payload))
                elif frame.opcode == OP_PING and self.transport is not None:  # uvicorn pings every 20 s
                    self.transport.write(encode_frame(OP_PONG, frame.payload, mask_key=mask))

        def message(self, doc: dict) -> None:
            now = time.perf_counter()
            event = doc.get("event")
            if event == "media":
                p = doc["media"]["payload"]
                nbytes = len(p) * 3 // 4 - p[-2:].count("=")
                frames = nbytes / 160
                dry = now - self.play_end
                if measuring[0]:
                    stats["frames_heard"] += frames
                    if LATE_TOLERANCE_S < dry < REPLY_GAP_S:
                        stats["underruns"] += 1
                        stats["late_frames"] += frames
                self.play_end = max(self.play_end, now) + nbytes / 8000
            elif event == "mark":
                self.marks.append((self.play_end, doc["mark"]["name"]))
            elif event == "clear":  # the buffer is emptied: what comes next is a new reply, not late
                stats["clears"] += measuring[0]
                self.play_end = 0.0
                self.marks.clear()

        def tick(self) -> None:
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(self.media)
            if self.marks and self.marks[0][0] <= time.perf_counter():
                _, name = self.marks.pop(0)
                self.transport.write(text({"event": "mark", "sequenceNumber": "4", "streamSid": self.stream,
                                           "mark": {"name": name}}))
                stats["marks_echoed"] += 1

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        conns: list[Call] = []
        for i in range(calls):
            if ramp > 0:
                await asyncio.sleep(1 / ramp)
            if i == pause_after and pause_s > 0:
                await asyncio.sleep(pause_s)
            req, _ = upgrade_request(host, port, path, {"X-Twilio-Signature": signature})
            _, proto = await loop.create_connection(Call, host, port)
            proto.transport.write(req)
            conns.append(proto)
        results = await asyncio.gather(*(c.upgraded for c in conns))
        if not all(results):
            return {"error": f"{results.count(False)} upgrades refused"}
        print("CONNECTED", flush=True)
        slots = [conns[i::20] for i in range(20)]
        t0 = loop.time() + hold
        t_measure, tick = t0 + warmup, 0
        t_end = t_measure + seconds
        sent = sent0 = 0
        while True:
            due = t0 + tick * 0.001
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            if now >= t_end:
                break
            if not measuring[0] and now >= t_measure:
                measuring[0] = True
                sent0 = sent
                print("MEASURE", flush=True)
            for c in slots[tick % 20]:
                c.tick()
                sent += 1
            tick += 1
        print("END", flush=True)
        measuring[0] = False
        await loop.run_in_executor(None, sys.stdin.readline)
        closed = stats["closed"]
        for c in conns:
            c.transport.close()
        heard = stats["frames_heard"]
        return {"caller_frames_sent": sent - sent0, "agent_frames_heard": round(heard),
                "underruns": stats["underruns"], "late_frames": round(stats["late_frames"]),
                "late_frames_pct": round(stats["late_frames"] / heard * 100, 2) if heard else None,
                "marks_echoed": stats["marks_echoed"], "clears": stats["clears"],
                "connections_closed_early": closed}

    return uvloop.run(main())


# --------------------------------------------------------------------------------------------- appends
def append_latency(append_ms: int, seconds: float = 4.0) -> dict:
    """What batching adds on the caller -> model path: for each 20 ms caller frame handed to the real
    `RealtimeLink`, the time until the append carrying it is written to the model socket (a stand-in
    connection that records the time of each write), with frames every 20 ms on the event loop's clock."""
    from gateway.call.model_link import RealtimeLink

    pending: list[float] = []
    delays: list[float] = []

    class _Conn:
        async def send_raw(self, data: str) -> None:
            now = time.perf_counter()
            frames = len(base64.b64decode(json.loads(data)["audio"])) // 160
            for _ in range(frames):
                delays.append(now - pending.pop(0))

        async def send(self, event: dict) -> None: ...

    async def main() -> None:
        link = RealtimeLink(call_uuid="bench", base_url=None, api_key="x", model="m", profile="p",
                            dispatch=lambda e: None, on_failure=lambda k, d: None, connect_timeout=1.0,
                            max_pending_audio=1000, append_bytes=8 * append_ms)
        link._conn, link._ready = _Conn(), True  # noqa: SLF001 - the send path alone, without a socket
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(int(seconds * 50)):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            pending.append(time.perf_counter())
            link.append_audio(bytes([0xFF]) * 160)
        await asyncio.sleep(0.05)

    asyncio.run(main())
    d = sorted(delays)
    return {"append_ms": append_ms, "frames": len(d), "added_ms_p50": round(d[len(d) // 2] * 1000, 2),
            "added_ms_p99": round(d[int(len(d) * 0.99)] * 1000, 2), "added_ms_max": round(d[-1] * 1000, 2)}


# --------------------------------------------------------------------------------------------- memory
def _traced_gateway(trace_dir: str, frames: int) -> int:
    """`gateway serve` with a thread answering requests the harness drops into `trace_dir` (`LABEL.req`):
    `start` starts tracemalloc (`--trace-frames` deep) once the gateway is up (traced from the first
    import, start-up takes minutes on this machine; what is allocated before and still alive is not
    counted, and that is the point: the difference at N calls is the calls' memory); any other label
    writes, after a full
    collection, the tracemalloc snapshot (`LABEL.snap`) and the live objects counted by type
    (`LABEL.types.json`); then `LABEL.done`. Opt-in, from the benchmark only: nothing in the gateway
    changes."""
    import gc
    import tracemalloc

    folder = Path(trace_dir)

    def answer() -> None:
        while True:
            for req in sorted(folder.glob("*.req")):
                label = req.stem
                req.unlink()
                if label == "start":
                    tracemalloc.start(frames)
                    (folder / "start.done").write_text("")
                    continue
                gc.collect()
                tracemalloc.take_snapshot().dump(str(folder / f"{label}.snap"))
                counts: dict[str, int] = {}
                for obj in gc.get_objects():
                    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
                    counts[name] = counts.get(name, 0) + 1
                (folder / f"{label}.types.json").write_text(json.dumps(counts))
                (folder / f"{label}.done").write_text("")
            time.sleep(0.1)

    threading.Thread(target=answer, daemon=True).start()
    from gateway.cli import main as gateway_main

    return gateway_main(["serve"])


def _snapshot(trace_dir: Path, label: str, timeout: float = 180.0) -> None:
    (trace_dir / f"{label}.req").write_text("")
    deadline = time.monotonic() + timeout
    while not (trace_dir / f"{label}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {label} snapshot within {timeout} s")
        time.sleep(0.1)


def _owner(frames) -> str:  # type: ignore[no-untyped-def]
    """Who asked for an allocation: the innermost gateway frame of its traceback, else its own frame."""
    for f in reversed(frames):  # a tracemalloc Traceback runs oldest first: the most recent call first
        if "/gateway/" in f.filename and "/site-packages/" not in f.filename:
            return f"{f.filename.split('/gateway/', 1)[1]}:{f.lineno}"
    return f"(no gateway frame) {_package(frames[-1].filename)}"


def _package(filename: str) -> str:
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1].split("/", 1)[0]
    if "/gateway/" in filename:
        return "gateway/" + filename.split("/gateway/", 1)[1].rsplit("/", 1)[0]
    return filename.rsplit("/lib/python3", 1)[-1].split("/", 1)[-1].split("/", 1)[0] or filename


def memory_breakdown(trace_dir: Path, calls: int, label: str, top: int = 15) -> dict:
    """Where the gateway's memory per call goes: the snapshot at `label` against the idle one, per call,
    grouped three ways (allocating package, the gateway line that asked, live objects by type)."""
    import tracemalloc

    idle = tracemalloc.Snapshot.load(str(trace_dir / "idle.snap"))
    snap = tracemalloc.Snapshot.load(str(trace_dir / f"{label}.snap"))

    def grouped(s: tracemalloc.Snapshot, key) -> dict[str, int]:  # type: ignore[no-untyped-def]
        out: dict[str, int] = {}
        for st in s.statistics("traceback"):
            k = key(st.traceback)
            out[k] = out.get(k, 0) + st.size
        return out

    def diff(key) -> list[list]:  # type: ignore[no-untyped-def]
        a, b = grouped(idle, key), grouped(snap, key)
        rows = sorted(((k, b.get(k, 0) - a.get(k, 0)) for k in set(a) | set(b)), key=lambda r: -r[1])
        return [[k, round(v / calls / 1024, 2)] for k, v in rows[:top]]

    t0 = json.loads((trace_dir / "idle.types.json").read_text())
    t1 = json.loads((trace_dir / f"{label}.types.json").read_text())
    types = sorted(((k, t1.get(k, 0) - t0.get(k, 0)) for k in set(t0) | set(t1)), key=lambda r: -r[1])
    total = sum(st.size for st in snap.statistics("filename"))
    total -= sum(st.size for st in idle.statistics("filename"))
    return {"snapshot": label, "traced_kb_per_call": round(total / calls / 1024, 1),
            "by_package_kb_per_call": diff(lambda tb: _package(tb[-1].filename)),
            "by_gateway_line_kb_per_call": diff(lambda tb: _owner(tb)),
            "objects_per_call": [[k, round(v / calls, 2)] for k, v in types[:top]]}


# --------------------------------------------------------------------------------------------- one load
BENCH_VENV = ROOT / ".venv-bench"  # `make bench-deps`: Pipecat, never in the gateway's own .venv
TWILIO_TOKEN = "bench-twilio-auth-token"  # signs the upgrades (both bridges check X-Twilio-Signature)


def _stop(*procs: subprocess.Popen | None) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _log_path(name: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"model-link-{name}.log"


def _log(name: str):  # type: ignore[no-untyped-def]
    """A process's stderr, kept for a look after a failed run (a pipe nobody reads would block it)."""
    return open(_log_path(name), "w")  # noqa: SIM115


def _start_bridge(bridge: str, calls: int, fake_port: int, args: argparse.Namespace,
                  trace_dir: Path | None) -> tuple[subprocess.Popen, int, int | None]:
    """The bridge under test on core 0: (process, media port, admin port or None)."""
    host = args.host
    port = mp.free_port()
    if bridge == "pipecat":
        py = BENCH_VENV / "bin" / "python"
        if not py.exists():
            raise SystemExit(f"{py} not found: `make bench-deps` installs Pipecat for the comparison")
        server = subprocess.Popen([*mp.NICE, "taskset", "-c", "0", str(py), str(Path(__file__).parent /
                                   "pipecat_bridge.py"), host, str(port), f"ws://{host}:{fake_port}/v1/realtime",
                                   TWILIO_TOKEN], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=_log(bridge))
        _wait_or_stop(server, port)
        return server, port, None
    admin = mp.free_port()
    tree = args.gateway_tree.resolve()
    env = {**os.environ, "GATEWAY_MODEL_BACKEND": "realtime", "GATEWAY_MODEL_URL": f"ws://{host}:{fake_port}/v1",
           "GATEWAY_MEDIA_HOST": host, "GATEWAY_MEDIA_PORT": str(port), "GATEWAY_ADMIN_HOST": host,
           "GATEWAY_ADMIN_PORT": str(admin), "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_AUTH_TOKENS": "",
           "GATEWAY_SHUTDOWN_TIMEOUT_S": "1", "GATEWAY_MAX_STREAMS_PER_SOURCE": str(calls + 10),
           "GATEWAY_STREAM_RATE_PER_SOURCE": "100000", "GATEWAY_STREAM_BURST_PER_SOURCE": str(calls + 10),
           "GATEWAY_INPUT_TRANSCRIPTION_MODEL": ""}
    if bridge == "gateway":  # the Twilio Media Streams ingress; its REST control pointed at nothing
        env.update(GATEWAY_TWILIO_AUTH_TOKEN=TWILIO_TOKEN, GATEWAY_TWILIO_API_BASE_URL=f"http://{host}:9")
    if getattr(args, "media_stack", None):  # --media-stacks: what carries the media WebSocket after its 101
        env["GATEWAY_MEDIA_STACK"] = args.media_stack
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree)
    cmd = [PY, "-m", "gateway", "serve"]
    if trace_dir is not None:  # tracemalloc once up; snapshots on request (see _traced_gateway)
        cmd = [PY, str(Path(__file__).resolve()), "--traced-gateway", str(trace_dir), str(args.trace_frames)]
        # Traced, the gateway runs many times slower: a call's `start` may wait longer than the 0.5 s it
        # is given after the upgrade (GATEWAY_METADATA_TIMEOUT_S), which would refuse it.
        env.update(GATEWAY_METADATA_TIMEOUT_S="120", GATEWAY_UPGRADE_HEADER_TIMEOUT_S="120")
    server = subprocess.Popen([*mp.NICE, "taskset", "-c", "0", *cmd], env=env, cwd=tree,
                              stdout=subprocess.DEVNULL, stderr=_log(bridge))
    _wait_or_stop(server, port, admin)
    return server, port, admin


def _wait_or_stop(server: subprocess.Popen, *ports: int) -> None:
    try:
        for port in ports:
            mp.wait_port(port, server, seconds=120)
    except BaseException:
        _stop(server)
        raise


def run(bridge: str, calls: int, args: argparse.Namespace, trace_dir: Path | None = None) -> dict:
    import psutil

    host = args.host
    # --memory-breakdown: the base snapshot at `base` calls (the client pauses there), so that what the first
    # call alone costs (modules imported on first use, pydantic models built) is not counted per call.
    base, pause = (min(5, calls // 4), 60.0) if trace_dir is not None else (0, 0.0)
    fake = subprocess.Popen([*mp.NICE, "taskset", "-c", "1", PY, __file__, "--fake", host, str(calls),
                             str(args.reply_every), str(args.reply_ms), str(base)], stdout=subprocess.PIPE,
                            text=True)
    server = client = None
    result: dict = {"bridge": bridge, "calls": calls}
    if bridge != "pipecat" and getattr(args, "media_stack", None):
        result["media_stack"] = args.media_stack
    try:
        assert fake.stdout is not None
        fake_port = int(fake.stdout.readline().split()[1])
        server, port, admin = _start_bridge(bridge, calls, fake_port, args, trace_dir)
        time.sleep(1.0)  # start-up settles (the gateway's first readiness probe)
        proc = psutil.Process(server.pid)
        if trace_dir is not None:
            _snapshot(trace_dir, "start")
        rss0 = proc.memory_info().rss
        cpu0 = sum(proc.cpu_times()[:2])
        if bridge == "gateway-fs":  # the mod_audio_stream ingress (benchmarks/media_plane.py's client)
            ccmd = [mp.__file__, "--client", host, str(port), str(calls), str(args.warmup), str(args.seconds),
                    "/stream/", str(args.hold)]
        else:
            ccmd = [__file__, "--twilio-client", host, str(port), str(calls), str(args.warmup),
                    str(args.seconds), str(args.hold), TWILIO_TOKEN, str(args.ramp), str(base), str(pause)]
        client = subprocess.Popen([*mp.NICE, "taskset", "-c", "1", PY, *ccmd], cwd=ROOT,
                                  stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=_log("client"),
                                  text=True)
        assert client.stdout is not None and client.stdin is not None
        t_setup = time.perf_counter()
        ready = queue.Queue()  # type: queue.Queue[str]
        def fake_lines() -> None:
            while (line := fake.stdout.readline().strip()) not in ("READY", ""):
                ready.put(line)
            ready.put(line)

        threading.Thread(target=fake_lines, daemon=True).start()
        line2 = ""
        while line2 != "READY":  # READY: every call's session.update answered
            try:
                line2 = ready.get(timeout=max(0.1, args.setup_timeout - (time.perf_counter() - t_setup)))
            except queue.Empty:
                line2 = "timeout"
                break
            if line2 == "BASE" and trace_dir is not None:
                time.sleep(2.0)  # the base calls' set-up settles while the client pauses
                _snapshot(trace_dir, "idle")
            elif line2 != "BASE":
                break
        setup_wall = time.perf_counter() - t_setup
        cpu1 = sum(proc.cpu_times()[:2])
        rss1 = proc.memory_info().rss
        result.update(loadavg_1m=round(os.getloadavg()[0], 1),
                      setup_cpu_ms_per_call=round((cpu1 - cpu0) / calls * 1000, 2))
        if line2 != "READY":  # some calls never got their model session: the set-up broke down
            result["error"] = f"not every model session came up within {args.setup_timeout} s"
            if client.poll() is not None:
                result["error"] += f" (the load client exited {client.returncode}: see {_log_path('client')})"
            return result
        if trace_dir is not None:
            _snapshot(trace_dir, "setup")
        lines = []
        while (line := client.stdout.readline().strip()) != "MEASURE":
            lines.append(line)
            if not line and client.poll() is not None:
                raise RuntimeError(f"client failed: {lines}")
        m0 = mp.scrape(admin) if admin else {}
        c0 = proc.cpu_times()
        t0 = time.perf_counter()
        rss_peak = proc.memory_info().rss
        while (line := client.stdout.readline().strip()) not in ("END", ""):
            pass
        c1 = proc.cpu_times()
        t1 = time.perf_counter()
        rss_peak = max(rss_peak, proc.memory_info().rss)
        m1 = mp.scrape(admin) if admin else {}
        if trace_dir is not None:
            _snapshot(trace_dir, "steady")
        client.stdin.write("\n")
        client.stdin.flush()
        heard = {}
        for line in client.stdout.read().splitlines():
            if line.startswith("{"):
                heard = json.loads(line)
        cpu = (c1.user - c0.user + c1.system - c0.system) / (t1 - t0) * 100
        result.update(setup_wall_s=round(setup_wall, 2),
                      rss_per_call_kb_after_setup=round((rss1 - rss0) / calls / 1024, 1),
                      rss_per_call_kb_peak=round((rss_peak - rss0) / calls / 1024, 1),
                      server_cpu_pct=round(cpu, 1), cpu_pct_per_call=round(cpu / calls, 3),
                      loadavg_1m_end=round(os.getloadavg()[0], 1), caller=heard)
        if admin:  # the gateway's own counters, for the record
            def delta(name: str) -> float:
                return m1.get(name, 0.0) - m0.get(name, 0.0)

            frames_out = delta("gateway_frames_out_total")
            underruns = delta("gateway_playout_underruns_total")
            result["gateway_metrics"] = {
                "frames_in": delta("gateway_frames_in_total"), "agent_frames_out": frames_out,
                "playout_underruns": underruns,
                "late_frames_pct": round(underruns / frames_out * 100, 2) if frames_out else None,
                "barge_ins": delta("gateway_barge_ins_total"), "gc": _gc_pauses(m0, m1)}
    finally:
        _stop(client, server, fake)
        if fake.stdout is not None:  # the fake's own lag: late replies are not the bridge's
            for line in fake.stdout.read().splitlines():
                if line.startswith("{"):
                    result.update(json.loads(line))
    return result


def _gc_pauses(m0: dict[str, float], m1: dict[str, float]) -> dict[str, dict]:
    """The gateway's garbage-collector runs in the window, per generation (gateway_gc_pause_seconds):
    how many, their total, and how many stopped the loop longer than 5 ms (a quarter of a frame)."""
    out = {}
    for gen in "012":
        def d(suffix: str, le: str | None = None, gen: str = gen) -> float:
            key = (f'gateway_gc_pause_seconds_{suffix}{{generation="{gen}"}}' if le is None else
                   f'gateway_gc_pause_seconds_bucket{{generation="{gen}",le="{le}"}}')
            return m1.get(key, 0.0) - m0.get(key, 0.0)

        runs = d("count")
        out[gen] = {"runs": int(runs), "total_ms": round(d("sum") * 1000, 1),
                    "over_5ms": int(runs - d("bucket", "0.005"))}
    return out


def _ratios(runs: list[dict]) -> list[dict]:
    """Gateway against Pipecat at each load, from the runs of this one invocation (means over rounds)."""
    out = []
    for calls in sorted({r["calls"] for r in runs}):
        def mean(bridge: str, key: str, calls: int = calls) -> float | None:
            vals = [r[key] for r in runs if r["calls"] == calls and r["bridge"] == bridge and key in r]
            return sum(vals) / len(vals) if vals else None

        row: dict = {"calls": calls}
        for key in ("server_cpu_pct", "setup_cpu_ms_per_call", "rss_per_call_kb_after_setup"):
            g, pc = mean("gateway", key), mean("pipecat", key)
            if g and pc:
                row[f"pipecat_over_gateway_{key}"] = round(pc / g, 2)
        for bridge in ("gateway", "gateway-fs"):  # --media-stacks: raw against aiohttp, same bridge and load
            for key in ("server_cpu_pct", "setup_cpu_ms_per_call", "rss_per_call_kb_peak"):
                vals = {stack: [r[key] for r in runs if r["calls"] == calls and r["bridge"] == bridge
                                and r.get("media_stack") == stack and key in r]
                        for stack in ("aiohttp", "raw")}
                if vals["aiohttp"] and vals["raw"]:
                    a, b = (sum(v) / len(v) for v in (vals["aiohttp"], vals["raw"]))
                    if a:
                        row[f"{bridge}_raw_over_aiohttp_{key}"] = round(b / a, 2)
        out.append(row)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--append-latency":
        for ms in [int(x) for x in sys.argv[2:]] or [20, 40, 60, 100]:
            print(json.dumps(append_latency(ms)), flush=True)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--fake":
        host, expected, every, reply_ms = sys.argv[2:6]
        base = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        _fake_model(host, int(expected), float(every), int(reply_ms), base)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--twilio-client":
        host, port, calls, warmup, seconds, hold, token = sys.argv[2:9]
        ramp, pause_after, pause_s = (sys.argv[9:12] + ["0", "0", "0"])[:3]
        doc = _twilio_client(host, int(port), int(calls), float(warmup), float(seconds), float(hold), token,
                             float(ramp), int(pause_after), float(pause_s))
        print(json.dumps(doc), flush=True)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--traced-gateway":
        return _traced_gateway(sys.argv[2], int(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, nargs="+", default=[100])
    p.add_argument("--bridges", nargs="+", default=["gateway", "pipecat"],
                   choices=["gateway", "pipecat", "gateway-fs"],
                   help="gateway: its Twilio Media Streams ingress; pipecat: benchmarks/pipecat_bridge.py; "
                        "gateway-fs: the mod_audio_stream ingress (another client protocol: not like for "
                        "like with pipecat)")
    p.add_argument("--pipecat-max-calls", type=int,
                   help="skip Pipecat above this many calls (it has lost real time well below: its set-up "
                        "alone takes ~50-80 ms of CPU and ~15 MB per call)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds per load: gateway, pipecat, ...")
    p.add_argument("--media-stacks", nargs="+", choices=["aiohttp", "raw"], default=[],
                   help="run each gateway bridge once per GATEWAY_MEDIA_STACK, interleaved (default: the "
                        "gateway's own default only)")
    p.add_argument("--memory-breakdown", action="store_true",
                   help="gateway only: tracemalloc snapshots at 0 calls, after set-up and at steady state "
                        "(tracing costs CPU: its CPU figures are not comparable)")
    p.add_argument("--ramp", type=float, default=0.0,
                   help="new calls per second from the Twilio client (0: all at once, the default)")
    p.add_argument("--trace-frames", type=int, default=12, help="--memory-breakdown's tracemalloc depth")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--hold", type=float, default=3.0, help="seconds between set-up and the first audio")
    p.add_argument("--setup-timeout", type=float, default=30.0)
    p.add_argument("--reply-every", type=float, default=4.0)
    p.add_argument("--reply-ms", type=int, default=2000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--gateway-tree", type=Path, default=ROOT)
    p.add_argument("--gateway-trees", type=Path, nargs="+",
                   help="several source trees (git worktrees) of the gateway, interleaved in every round: "
                        "before/after comparisons in one run")
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the `finally`s stop every process started
    mp.HOST[0] = args.host
    if args.nice:
        mp.NICE[:] = ["nice", "-n", str(args.nice)]
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "command": " ".join([Path(PY).name, *sys.argv]), "gateway_tree": str(args.gateway_tree),
                     "runs": []}
    if args.memory_breakdown:
        import tempfile

        for calls in args.calls:
            with tempfile.TemporaryDirectory(prefix="model-link-trace-") as tmp:
                bridge = next((b for b in args.bridges if b != "pipecat"), "gateway")
                r = run(bridge, calls, args, trace_dir=Path(tmp))
                if "error" not in r:
                    base = min(5, calls // 4)
                    r["memory"] = [memory_breakdown(Path(tmp), calls - base, label)
                                   for label in ("setup", "steady")]
                    r["memory_base_calls"] = base
                results["runs"].append(r)
                print(json.dumps(r), flush=True)
    else:
        for calls in args.calls:
            for _ in range(args.rounds):
                for bridge in args.bridges:
                    if bridge == "pipecat" and calls > (args.pipecat_max_calls or calls):
                        continue
                    gateway = bridge != "pipecat"
                    trees = args.gateway_trees if args.gateway_trees and gateway else [None]
                    stacks = args.media_stacks if args.media_stacks and gateway else [None]
                    for tree, stack in [(t, st) for t in trees for st in stacks]:
                        if tree is not None:
                            args.gateway_tree = tree
                        args.media_stack = stack
                        r = run(bridge, calls, args)
                        if tree is not None:
                            r["tree"] = str(tree)
                        results["runs"].append(r)
                        print(json.dumps(r), flush=True)
        results["ratios"] = _ratios(results["runs"])
        print(json.dumps({"ratios": results["ratios"]}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
