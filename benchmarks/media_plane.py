"""Media-plane benchmark: `gateway serve` with the null model under N concurrent 8 kHz calls, plus a
comparison of WebSocket server stacks and the per-frame cost of the audio kernels.

    .venv/bin/python benchmarks/media_plane.py              # everything (~2 minutes)
    .venv/bin/python benchmarks/media_plane.py --calls 500 --seconds 8 --skip-stacks

The server under test is pinned to core 0 with taskset, the load client to core 1. The client is a raw
asyncio protocol (uvloop) that behaves like mod_audio_stream on the wire: libwsc's upgrade request, a
metadata frame, then a masked 320-byte L16 frame per call every 20 ms (calls staggered over the 20 ms).
With the null model (`GATEWAY_MODEL_BACKEND=null-echo`) every caller frame comes back through the whole
media path: L16 -> u-law -> base64 "model" event -> u-law decode -> playout clock -> streamAudio JSON.

Reported: server CPU % of one core (user+sys over the measured window), RSS per call, per-frame work
(server histogram), pacing of returned audio (client-side inter-arrival of streamAudio messages), and
underruns counted by the gateway's playout clock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import timeit
import urllib.request
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FRAME = 320  # 20 ms of 8 kHz L16
NICE: list[str] = []  # ["nice", "-n", "-10"] with --nice -10: other work on a shared machine yields
TIMED_CALLS = 100  # calls whose returned messages are parsed and timed (pacing); the rest count bytes
HOST = ["127.0.0.1"]  # --host: any loopback address (a shared machine gives each user its own 127.x.y.z)


# --------------------------------------------------------------------------------------------- client
def _client(host: str, port: int, calls: int, warmup: float, seconds: float, path_prefix: str,
            hold: float = 0.05) -> dict:
    import uvloop

    from gateway.client.wsframe import OP_BINARY, OP_TEXT, encode_frame, upgrade_request

    frame = encode_frame(OP_BINARY, bytes(FRAME), mask_key=b"\x11\x22\x33\x44")
    metadata = encode_frame(OP_TEXT, json.dumps({"rate": 8000, "caller": "bench", "worker": "fs1"}).encode())
    measuring = False
    gaps: list[float] = []
    received = [0]

    class Conn(asyncio.Protocol):
        def __init__(self, timed: bool = True) -> None:
            self.timed = timed  # parse frames and time them; the others only count bytes (client CPU)
            self.bytes = 0
            self.buf = bytearray()
            self.upgraded = asyncio.get_running_loop().create_future()
            self.transport: asyncio.Transport | None = None
            self.last = 0.0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if not self.upgraded.done():
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                ok = self.buf.startswith(b"HTTP/1.1 101")
                del self.buf[: end + 4]
                self.upgraded.set_result(ok)
            if not self.timed:
                self.bytes += len(self.buf)
                self.buf.clear()
                return
            b = self.buf
            pos = 0
            now = time.perf_counter()
            while len(b) - pos >= 2:
                n = b[pos + 1] & 0x7F
                hdr = 2
                if n == 126:
                    if len(b) - pos < 4:
                        break
                    n, hdr = int.from_bytes(b[pos + 2 : pos + 4], "big"), 4
                elif n == 127:
                    if len(b) - pos < 10:
                        break
                    n, hdr = int.from_bytes(b[pos + 2 : pos + 10], "big"), 10
                if len(b) - pos < hdr + n:
                    break
                if b[pos] & 0x0F in (1, 2):
                    received[0] += 1
                    if measuring and self.last:
                        gaps.append(now - self.last)
                    self.last = now
                pos += hdr + n
            del b[:pos]

    async def main() -> dict:
        nonlocal measuring
        loop = asyncio.get_running_loop()
        conns: list[Conn] = []
        for i in range(calls):
            req, _ = upgrade_request(host, port, f"{path_prefix}bench-{os.getpid()}-{i}")
            _, proto = await loop.create_connection(partial(Conn, timed=i < TIMED_CALLS), host, port)
            proto.transport.write(req)
            conns.append(proto)
        results = await asyncio.gather(*(c.upgraded for c in conns))
        if not all(results):
            return {"error": f"{results.count(False)} upgrades refused"}
        for c in conns:
            c.transport.write(metadata)
        print("CONNECTED", flush=True)
        slots = [conns[i::20] for i in range(20)]  # 20 slots of 1 ms: calls spread over the 20 ms
        t0 = loop.time() + hold  # `hold`: call set-up (the model links) measured before any audio
        lateness: list[float] = []
        tick = 0
        t_measure = t0 + warmup
        t_end = t_measure + seconds
        sent = 0
        while True:
            due = t0 + tick * 0.001
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            if now >= t_end:
                break
            if not measuring and now >= t_measure:
                measuring = True
                received_at_start = received[0]
                bytes_at_start = sum(c.bytes for c in conns)
                cpu_at_start = time.process_time()
                sent_at_start = sent
                print("MEASURE", flush=True)  # the parent samples the server's CPU from here
            if measuring:
                lateness.append(now - due)
            for c in slots[tick % 20]:
                c.transport.write(frame)
                sent += 1
            tick += 1
        print("END", flush=True)
        client_cpu = (time.process_time() - cpu_at_start) / seconds * 100
        await loop.run_in_executor(None, sys.stdin.readline)  # the parent scrapes the server first
        untimed_bytes = sum(c.bytes for c in conns) - bytes_at_start
        for c in conns:
            c.transport.close()
        g = sorted(gaps)
        jitter = sorted(abs(x - 0.020) for x in gaps)

        def pct(a: list[float], q: float) -> float:
            return round(a[min(len(a) - 1, int(q * len(a)))] * 1000, 3) if a else float("nan")

        timed = min(calls, TIMED_CALLS)
        return {
            "frames_sent": sent - sent_at_start,
            "frames_received_timed_calls": received[0] - received_at_start,
            "frames_sent_timed_calls": (sent - sent_at_start) * timed // calls,
            "bytes_received_other_calls": untimed_bytes,
            "client_cpu_pct": round(client_cpu, 1),
            "interarrival_ms": {"p50": pct(g, 0.5), "p99": pct(g, 0.99), "max": pct(g, 1.0)},
            "jitter_ms": {"mean": round(statistics.fmean(jitter) * 1000, 3) if jitter else None,
                          "p99": pct(jitter, 0.99), "max": pct(jitter, 1.0)},
            "client_send_lateness_ms_p99": pct(sorted(lateness), 0.99),
        }

    return uvloop.run(main())


# --------------------------------------------------------------------------------------------- echo servers
def _echo_server(stack: str, port: int, host: str) -> None:
    if stack == "aiohttp":
        import uvloop
        from aiohttp import WSMsgType, web

        async def h(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
            return ws

        app = web.Application()
        app.router.add_get("/{tail:.*}", h)
        uvloop.install()
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    elif stack == "fastapi-uvicorn":
        import uvicorn
        from fastapi import FastAPI, WebSocket, WebSocketDisconnect

        # FastAPI resolves the (string, __future__) annotations in module globals
        globals()["WebSocket"] = WebSocket
        app = FastAPI()

        @app.websocket("/echo/{name}")
        async def ws(websocket: WebSocket, name: str) -> None:
            await websocket.accept()
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("bytes") is not None:  # the metadata text frame is not echoed
                        await websocket.send_bytes(message["bytes"])
            except WebSocketDisconnect:
                pass

        # uvicorn on uvloop with the websockets protocol (httptools is not installed: http="auto" = h11)
        uvicorn.run(app, host=host, port=port, loop="uvloop", http="auto", ws="websockets",
                    log_level="warning", access_log=False)
    elif stack == "websockets":
        import uvloop
        from websockets.asyncio.server import serve

        async def echo(ws) -> None:  # type: ignore[no-untyped-def]
            async for msg in ws:
                if isinstance(msg, bytes):
                    await ws.send(msg)

        async def main() -> None:
            async with serve(echo, host, port, compression=None):
                await asyncio.Event().wait()

        uvloop.run(main())


# --------------------------------------------------------------------------------------------- orchestration
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST[0], 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.returncode}")
        try:
            with socket.create_connection((HOST[0], port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not listen")


def scrape(admin_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{HOST[0]}:{admin_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gateway_") and " " in line:
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def hist_quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> str:
    buckets = []
    for k, v in after.items():
        if k.startswith(f"{name}_bucket"):
            le = k.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), v - before.get(k, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "n/a"
    for le, count in buckets:
        if count >= q * total:
            return f"<= {le * 1e6:.0f} us" if le != float("inf") else "> 10 ms"
    return "n/a"


def run_load(server_cmd: list[str], env: dict[str, str], port: int, calls: int, warmup: float, seconds: float,
             path_prefix: str, admin_port: int | None = None, cwd: Path = ROOT) -> dict:
    import psutil

    server = subprocess.Popen([*NICE, "taskset", "-c", "0", *server_cmd], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            wait_port(port, server)
            if admin_port:
                wait_port(admin_port, server)
        except RuntimeError:
            assert server.stderr is not None
            raise RuntimeError(server.stderr.read().decode()[-2000:]) from None
        proc = psutil.Process(server.pid)
        rss_idle = proc.memory_info().rss
        client = subprocess.Popen(
            [*NICE, "taskset", "-c", "1", PY, __file__, "--client", HOST[0], str(port), str(calls),
             str(warmup), str(seconds), path_prefix],
            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
        assert client.stdout is not None
        line = client.stdout.readline().strip()
        if line == "CONNECTED":
            line = client.stdout.readline().strip()
        if line != "MEASURE":
            raise RuntimeError(f"client failed: {line} {client.stdout.read()}")
        m0 = scrape(admin_port) if admin_port else {}
        c0 = proc.cpu_times()
        t0 = time.perf_counter()
        rss_peak = proc.memory_info().rss
        while True:
            line = client.stdout.readline().strip()
            rss_peak = max(rss_peak, proc.memory_info().rss)
            if line == "END" or not line:
                break
        c1 = proc.cpu_times()
        t1 = time.perf_counter()
        m1 = scrape(admin_port) if admin_port else {}
        assert client.stdin is not None
        client.stdin.write("\n")
        client.stdin.flush()
        result = json.loads(client.stdout.read().strip().splitlines()[-1])
        client.wait(30)
        cpu = (c1.user - c0.user + c1.system - c0.system) / (t1 - t0) * 100
        result.update({"calls": calls, "server_cpu_pct": round(cpu, 1), "loadavg_1m": os.getloadavg()[0],
                       "rss_idle_mb": round(rss_idle / 2**20, 1),
                       "rss_per_call_kb": round((rss_peak - rss_idle) / calls / 1024, 1)})
        if admin_port:
            result["frame_work_p50"] = hist_quantile(m0, m1, "gateway_frame_work_seconds", 0.50)
            result["frame_work_p99"] = hist_quantile(m0, m1, "gateway_frame_work_seconds", 0.99)
            result["underruns"] = m1.get("gateway_playout_underruns_total", 0) - m0.get(
                "gateway_playout_underruns_total", 0)
            name = "gateway_frames_in_total"
            frames = m1.get(name, 0) - m0.get(name, 0)
            result["frames_in_server"] = frames
            # Load-invariant figure (the machine is shared): server CPU time per caller frame, both
            # directions, and what that costs for 500 calls x 50 frames/s.
            cpu_s = cpu / 100 * (t1 - t0)
            if frames:
                result["cpu_us_per_frame_pair"] = round(cpu_s / frames * 1e6, 1)
                result["projected_cpu_pct_500_calls"] = round(cpu_s / frames * 25000 * 100, 1)
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def session_path_cost(frames: int = 50000, protocol: str = "freeswitch") -> float:
    """The gateway's own work per frame pair (validate, u-law, null model, playback, streamAudio), through
    the call's public path with an in-memory transport whose send costs nothing: what the media plane
    adds on top of the WebSocket stack. CPU time of the process (`time.process_time`) from the first
    frame to the last, so call set-up and other processes on a shared machine are not counted.

    No event-loop turn between frames: in the server the socket read costs that turn whatever the call
    does, and it is not the call's work (a bare `asyncio.sleep(0)` costs 5-8 us here). Without a turn the
    playback driver task cannot run, so the echo coming back proves the inline path sent every frame."""
    from gateway.call.session import CallSession
    from gateway.call.transport import MarkPlayed, StreamStart
    from gateway.profiles import load_profiles
    from gateway.proto import audio_stream as wire
    from gateway.proto.twilio_media import TwilioMediaCodec
    from gateway.settings import Settings

    now = [0.0]
    span = [0.0, 0.0]
    codec: wire.AudioStreamCodec | TwilioMediaCodec
    if protocol == "twilio":  # JSON text messages with base64 mu-law both ways, marks echoed
        codec = TwilioMediaCodec()
        sid = "MZ" + "0" * 32
        start_msg = json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": sid, "callSid": "CA" + "0" * 32,
            "tracks": ["inbound"], "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        payload = base64.b64encode(bytes([0xFF]) * 160).decode()
        media_msg = json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": sid, "media": {
            "track": "inbound", "chunk": "1", "timestamp": "20", "payload": payload}})

        def first() -> list:
            return codec.feed_text(start_msg)

        feed, message = codec.feed_text, media_msg
    else:  # mod_audio_stream: binary L16 frames in, streamAudio JSON out
        codec = wire.AudioStreamCodec("bench", default_rate=8000)
        pcm = bytes(320)

        def first() -> list:
            return codec.start_timeout()

        feed, message = codec.feed_binary, pcm

    class _MemoryTransport:
        codec_name, frame_ms, echoes_marks, closed = codec.name, 20, codec.echoes_marks, False
        sent = 0

        async def start(self, timeout: float) -> StreamStart:  # noqa: ASYNC109 - the seam's signature
            (start,) = first()
            assert isinstance(start, StreamStart)
            return start

        async def events(self):  # type: ignore[no-untyped-def]
            span[0] = time.process_time()  # from the first frame: call set-up is not per-frame work
            for _ in range(frames):
                now[0] += 0.02
                for event in feed(message):  # type: ignore[operator]
                    yield event
                if self.marks:  # Twilio echoes each mark once the audio before it played
                    for name in self.marks:
                        yield MarkPlayed(name)
                    self.marks.clear()
            span[1] = time.process_time()

        def __init__(self) -> None:
            self.marks: list[str] = []

        async def send_audio(self, audio: bytes) -> bool:
            codec.agent_audio(audio)
            self.sent += 1
            return True

        async def clear(self) -> None: ...

        async def mark(self, name: str) -> None:
            codec.mark(name)
            self.marks.append(name)

        async def send_side_text(self, doc: dict) -> None: ...
        async def close(self, code: int, reason: str) -> None: ...

    settings = Settings(model_backend="null-echo")
    profiles = load_profiles(settings.profiles_dir, settings.default_profile)
    transport = _MemoryTransport()
    call = CallSession(transport, settings=settings, profiles=profiles,  # type: ignore[arg-type]
                       fallback_audio=lambda p, r: b"", clock=lambda: now[0])

    async def run() -> float:
        await call.run()
        assert transport.sent >= frames - 5, "the echo did not come back"
        return (span[1] - span[0]) / frames

    return round(asyncio.run(run()) * 1e6, 2)


def kernel_costs() -> dict[str, float]:
    import numpy as np

    from gateway.audio import g711
    from gateway.audio.resample import StreamResampler
    from gateway.proto.audio_stream import build_stream_audio

    rng = np.random.default_rng(1)
    pcm8 = (rng.standard_normal(160) * 3000).astype("<i2").tobytes()
    ulaw = g711.pcm16_to_ulaw(pcm8)
    pcm16 = (rng.standard_normal(320) * 3000).astype("<i2").tobytes()
    pcm24 = (rng.standard_normal(480) * 3000).astype("<i2").tobytes()
    up, down = StreamResampler(16000, 24000), StreamResampler(24000, 16000)
    cases = {
        "g711 ulaw encode, 20 ms 8 kHz (bytes -> bytes)": lambda: g711.pcm16_to_ulaw(pcm8),
        "g711 ulaw decode, 20 ms 8 kHz (bytes -> bytes)": lambda: g711.ulaw_to_pcm16(ulaw),
        "g711 alaw encode, 20 ms 8 kHz": lambda: g711.pcm16_to_alaw(pcm8),
        "resample 16k -> 24k, 20 ms": lambda: up.process_bytes(pcm16),
        "resample 24k -> 16k, 20 ms": lambda: down.process_bytes(pcm24),
        "streamAudio JSON + base64, 20 ms 8 kHz": lambda: build_stream_audio(pcm8, 8000),
    }
    out = {}
    out["CallSession echo path, one frame in + one out, no sockets"] = session_path_cost()
    out["the same, Twilio Media Streams protocol (JSON + base64 both ways, marks)"] = session_path_cost(
        protocol="twilio")
    for name, fn in cases.items():
        n = 20000
        best = min(timeit.repeat(fn, number=n, repeat=5)) / n
        out[name] = round(best * 1e6, 2)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        host, port, calls, warmup, seconds, prefix = sys.argv[2:8]
        hold = float(sys.argv[8]) if len(sys.argv) > 8 else 0.05
        print(json.dumps(_client(host, int(port), int(calls), float(warmup), float(seconds), prefix, hold)),
              flush=True)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--echo-server":
        _echo_server(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, nargs="+", default=[500])
    p.add_argument("--stack-calls", type=int, default=300)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--skip-stacks", action="store_true")
    p.add_argument("--stacks", nargs="+", default=["aiohttp", "websockets", "fastapi-uvicorn"])
    p.add_argument("--nice", type=int, default=0, help="server and client nice level (root may go < 0)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--host", default="127.0.0.1", help="loopback address of every listener")
    p.add_argument("--gateway-tree", type=Path, default=ROOT,
                   help="run `gateway serve` from this source tree (an older commit checked out elsewhere), "
                        "with the same client and measurements")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--media-stacks", nargs="+", choices=["aiohttp", "raw"], default=[],
                   help="run `gateway serve` once per GATEWAY_MEDIA_STACK at each load, interleaved "
                        "(default: the gateway's own default only)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every load and stack")
    args = p.parse_args()
    HOST[0] = args.host
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    if os.cpu_count() and os.cpu_count() < 2:
        print("needs 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nice": args.nice,
                     "command": " ".join([Path(PY).name, *sys.argv])}
    if not args.skip_kernels:
        results["kernels_us"] = kernel_costs()
        print("kernels (best of 5 x 20000, us per call):")
        for k, v in results["kernels_us"].items():
            print(f"  {k:<60} {v:>7.2f}")
    results["gateway"] = []
    for calls, stack in [(c, st) for _ in range(args.rounds) for c in args.calls
                         for st in (args.media_stacks or [None])]:
        port, admin = free_port(), free_port()
        env = {**os.environ, "GATEWAY_MODEL_BACKEND": "null-echo", "GATEWAY_MEDIA_HOST": args.host,
               "GATEWAY_MEDIA_PORT": str(port), "GATEWAY_ADMIN_PORT": str(admin),
               "GATEWAY_ADMIN_HOST": args.host,
               "GATEWAY_LOG_LEVEL": "WARNING",
               "GATEWAY_AUTH_TOKENS": "", "GATEWAY_SHUTDOWN_TIMEOUT_S": "1",
               # All calls come from this one client address and open at once: lift the per-source
               # share (gateway/admission.py), which exists to stop exactly that from a stranger.
               "GATEWAY_MAX_STREAMS_PER_SOURCE": str(calls + 10), "GATEWAY_STREAM_RATE_PER_SOURCE": "100000",
               "GATEWAY_STREAM_BURST_PER_SOURCE": str(calls + 10)}
        if stack is not None:
            env["GATEWAY_MEDIA_STACK"] = stack
        tree = args.gateway_tree.resolve()
        if tree != ROOT:
            env["PYTHONPATH"] = str(tree)  # ahead of the editable install of this tree
        r = run_load([PY, "-m", "gateway", "serve"], env, port, calls, args.warmup, args.seconds, "/stream/",
                     admin_port=admin, cwd=tree)
        if stack is not None:
            r["media_stack"] = stack
        results["gateway"].append(r)
        label = f", {stack} stack" if stack else ""
        print(f"gateway serve, null-echo, {calls} calls{label}: {json.dumps(r)}")
    if not args.skip_stacks:
        results["stacks"] = {}
        for stack in args.stacks:
            port = free_port()
            r = run_load([PY, __file__, "--echo-server", stack, str(port), args.host], dict(os.environ), port,
                         args.stack_calls, args.warmup, args.seconds, "/echo/")
            results["stacks"][stack] = r
            print(f"echo server {stack}, {args.stack_calls} streams: {json.dumps(r)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
