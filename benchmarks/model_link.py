"""Calls per core with the model link counted (issue 17): `gateway serve` with a Realtime WebSocket per call
to a local fake Realtime server, under N concurrent 8 kHz calls.

    .venv/bin/python benchmarks/model_link.py --calls 100 200 --host 127.0.3.1
    .venv/bin/python benchmarks/model_link.py --calls 100 --gateway-tree /tmp/old   # another checkout
    .venv/bin/python benchmarks/model_link.py --append-latency 20 40 60 100   # what batching adds

Gateway pinned to core 0; the load client (benchmarks/media_plane.py's mod_audio_stream-like client) and
the fake model share core 1. The fake speaks the Realtime protocol's GA event names as the gateway uses them:
`session.update` -> `session.updated`; appends are counted, not parsed; every `--reply-every` seconds per
call a turn: `input_audio_buffer.speech_started` (a barge-in when a reply is playing), `speech_stopped`,
then a reply of `--reply-ms` of mu-law in 100 ms `response.output_audio.delta`s at twice real time, and
`response.done`; `response.cancel` ends the reply with a cancelled `response.done`, a truncate is answered.

Reported per load: call set-up CPU per call (gateway CPU from the first connection until every call's model
session is up, before any caller audio), RSS per call after set-up, steady-state CPU % of a core and CPU
per call, agent frames sent, underruns (the playout clock: a reply's audio reached the caller late) and
the share of late frames.
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
def _fake_model(host: str, expected: int, reply_every: float, reply_ms: int) -> None:
    import logging

    import uvloop
    from websockets.asyncio.server import serve

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # the gateway's TCP readiness probe
    chunk = base64.b64encode(bytes([0xFF]) * 800).decode()  # 100 ms of mu-law silence
    sessions = [0]
    ids = iter(range(1, 1 << 30))
    lags: list[float] = []  # how late each reply delta left the fake against its schedule

    def ev(doc: dict) -> str:
        return json.dumps(doc, separators=(",", ":"))

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        reply: asyncio.Task | None = None
        current = {"resp": "", "item": ""}

        async def speak() -> None:
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
                await ws.send(f'{delta_head}"{chunk}"}}')
            await ws.send(ev({"type": "response.done", "event_id": "e",
                              "response": {"id": rid, "object": "realtime.response", "status": "completed",
                                           "output": []}}))

        async def turns() -> None:
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
                if msg.startswith('{"type":"input_audio_buffer.append"'):
                    continue
                doc = json.loads(msg)
                kind = doc.get("type")
                if kind == "session.update":
                    await ws.send(ev({"type": "session.updated", "event_id": "e",
                                      "session": doc.get("session", {})}))
                    sessions[0] += 1
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
                                                "max": round(d[-1] * 1000, 1)}}), flush=True)

    uvloop.run(main())


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
        link._conn = _Conn()  # noqa: SLF001 - the send loop alone, without a socket
        sender = asyncio.create_task(link._send_loop())  # noqa: SLF001
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(int(seconds * 50)):
            await asyncio.sleep(max(0.0, t0 + k * 0.02 - loop.time()))
            pending.append(time.perf_counter())
            link.append_audio(bytes([0xFF]) * 160)
        await asyncio.sleep(0.05)
        sender.cancel()

    asyncio.run(main())
    d = sorted(delays)
    return {"append_ms": append_ms, "frames": len(d), "added_ms_p50": round(d[len(d) // 2] * 1000, 2),
            "added_ms_p99": round(d[int(len(d) * 0.99)] * 1000, 2), "added_ms_max": round(d[-1] * 1000, 2)}


# --------------------------------------------------------------------------------------------- one load
def run(calls: int, args: argparse.Namespace) -> dict:
    import psutil

    host = args.host
    fake = subprocess.Popen([*mp.NICE, "taskset", "-c", "1", PY, __file__, "--fake", host, str(calls),
                             str(args.reply_every), str(args.reply_ms)], stdout=subprocess.PIPE, text=True)
    server = client = None
    result: dict = {}
    try:
        assert fake.stdout is not None
        line = fake.stdout.readline().split()
        fake_port = int(line[1])
        port, admin = mp.free_port(), mp.free_port()
        tree = args.gateway_tree.resolve()
        env = {**os.environ, "GATEWAY_MODEL_BACKEND": "realtime", "GATEWAY_MODEL_URL": f"ws://{host}:{fake_port}/v1",
               "GATEWAY_MEDIA_HOST": host, "GATEWAY_MEDIA_PORT": str(port), "GATEWAY_ADMIN_HOST": host,
               "GATEWAY_ADMIN_PORT": str(admin), "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_AUTH_TOKENS": "",
               "GATEWAY_SHUTDOWN_TIMEOUT_S": "1", "GATEWAY_MAX_STREAMS_PER_SOURCE": str(calls + 10),
               "GATEWAY_STREAM_RATE_PER_SOURCE": "100000", "GATEWAY_STREAM_BURST_PER_SOURCE": str(calls + 10),
               "GATEWAY_INPUT_TRANSCRIPTION_MODEL": ""}
        if tree != ROOT:
            env["PYTHONPATH"] = str(tree)
        server = subprocess.Popen([*mp.NICE, "taskset", "-c", "0", PY, "-m", "gateway", "serve"], env=env,
                                  cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        mp.wait_port(port, server)
        mp.wait_port(admin, server)
        time.sleep(1.0)  # start-up settles (the first readiness probe)
        proc = psutil.Process(server.pid)
        rss0 = proc.memory_info().rss
        cpu0 = sum(proc.cpu_times()[:2])
        client = subprocess.Popen(
            [*mp.NICE, "taskset", "-c", "1", PY, mp.__file__, "--client", host, str(port), str(calls),
             str(args.warmup), str(args.seconds), "/stream/", str(args.hold)],
            cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
        assert client.stdout is not None
        t_setup = time.perf_counter()
        ready = queue.Queue()  # type: queue.Queue[str]
        threading.Thread(target=lambda: ready.put(fake.stdout.readline().strip()), daemon=True).start()
        try:  # READY: every call's session.update answered
            line2 = ready.get(timeout=args.setup_timeout)
        except queue.Empty:
            line2 = "timeout"
        setup_wall = time.perf_counter() - t_setup
        cpu1 = sum(proc.cpu_times()[:2])
        rss1 = proc.memory_info().rss
        if line2 != "READY":  # some calls never got their model session: the set-up broke down
            result = {"calls": calls, "loadavg_1m": round(os.getloadavg()[0], 1),
                      "error": f"not every model session came up within {args.setup_timeout} s",
                      "setup_cpu_ms_per_call": round((cpu1 - cpu0) / calls * 1000, 2)}
            return result
        lines = []
        while (line := client.stdout.readline().strip()) != "MEASURE":
            lines.append(line)
            if not line and client.poll() is not None:
                raise RuntimeError(f"client failed: {lines}")
        m0 = mp.scrape(admin)
        c0 = proc.cpu_times()
        t0 = time.perf_counter()
        rss_peak = proc.memory_info().rss
        while (line := client.stdout.readline().strip()) not in ("END", ""):
            pass
        c1 = proc.cpu_times()
        t1 = time.perf_counter()
        rss_peak = max(rss_peak, proc.memory_info().rss)
        m1 = mp.scrape(admin)
        assert client.stdin is not None
        client.stdin.write("\n")
        client.stdin.flush()
        client.stdout.read()
        cpu = (c1.user - c0.user + c1.system - c0.system) / (t1 - t0) * 100

        def delta(name: str) -> float:
            return m1.get(name, 0.0) - m0.get(name, 0.0)

        frames_out = delta("gateway_frames_out_total")
        underruns = delta("gateway_playout_underruns_total")
        result = {"calls": calls, "loadavg_1m": round(os.getloadavg()[0], 1),
                "setup_cpu_ms_per_call": round((cpu1 - cpu0) / calls * 1000, 2),
                "setup_wall_s": round(setup_wall, 2),
                "rss_per_call_kb_after_setup": round((rss1 - rss0) / calls / 1024, 1),
                "rss_per_call_kb_peak": round((rss_peak - rss0) / calls / 1024, 1),
                "server_cpu_pct": round(cpu, 1), "cpu_pct_per_call": round(cpu / calls, 3),
                "frames_in": delta("gateway_frames_in_total"), "agent_frames_out": frames_out,
                "underruns": underruns,
                "late_frames_pct": round(underruns / frames_out * 100, 2) if frames_out else None,
                "barge_ins": delta("gateway_barge_ins_total")}
    finally:
        for p in (client, server, fake):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        if fake.stdout is not None and result:  # the fake's own lag: late replies are not the gateway's
            for line in fake.stdout.read().splitlines():
                if line.startswith("{"):
                    result.update(json.loads(line))
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--append-latency":
        for ms in [int(x) for x in sys.argv[2:]] or [20, 40, 60, 100]:
            print(json.dumps(append_latency(ms)), flush=True)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--fake":
        host, expected, every, reply_ms = sys.argv[2:6]
        _fake_model(host, int(expected), float(every), int(reply_ms))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, nargs="+", default=[100])
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--hold", type=float, default=3.0, help="seconds between set-up and the first audio")
    p.add_argument("--setup-timeout", type=float, default=30.0)
    p.add_argument("--reply-every", type=float, default=4.0)
    p.add_argument("--reply-ms", type=int, default=2000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--gateway-tree", type=Path, default=ROOT)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    mp.HOST[0] = args.host
    if args.nice:
        mp.NICE[:] = ["nice", "-n", str(args.nice)]
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": " ".join([Path(PY).name, *sys.argv]), "gateway_tree": str(args.gateway_tree),
               "runs": []}
    for calls in args.calls:
        r = run(calls, args)
        results["runs"].append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
