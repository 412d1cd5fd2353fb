"""What one full garbage collection walks per live call: `gateway serve`'s Gateway in this process, its
start-up heap frozen as `gateway serve` does, N mod_audio_stream-like calls (benchmarks/media_plane.py's
client) talking to the lean fake Realtime server of benchmarks/model_link.py; then the GC-tracked objects
per call by type, and how long one full collection takes with them live.

    .venv/bin/python benchmarks/gc_objects.py --calls 100 --host 127.0.3.5     # pin it: taskset -c 0 ...
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _types() -> collections.Counter[str]:
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


async def measure(calls: int, host: str, seconds: float) -> dict:
    from gateway.runtime import freeze_startup_heap
    from gateway.serve import Gateway
    from gateway.settings import load_settings

    bench = ROOT / "benchmarks"
    # Plain Popen: the processes are only started and killed, never awaited.
    fake = subprocess.Popen([sys.executable, str(bench / "model_link.py"), "--fake", host,  # noqa: ASYNC220
                             str(calls), "4", "2000", "0"], stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert fake.stdout is not None
        port = int(fake.stdout.readline().split()[1])
        os.environ.update(
            GATEWAY_MODEL_BACKEND="realtime", GATEWAY_MODEL_URL=f"ws://{host}:{port}/v1",
            GATEWAY_MEDIA_HOST=host, GATEWAY_MEDIA_PORT="0", GATEWAY_ADMIN_HOST=host, GATEWAY_ADMIN_PORT="0",
            GATEWAY_LOG_LEVEL="ERROR",
            GATEWAY_AUTH_TOKENS="", GATEWAY_MAX_STREAMS_PER_SOURCE=str(calls + 10),
            GATEWAY_STREAM_RATE_PER_SOURCE="100000", GATEWAY_STREAM_BURST_PER_SOURCE=str(calls + 10),
            GATEWAY_INPUT_TRANSCRIPTION_MODEL="")
        gateway = Gateway(load_settings())
        await gateway.start()
        freeze_startup_heap()
        idle = _types()
        client = subprocess.Popen([sys.executable, str(bench / "media_plane.py"), "--client", host,  # noqa: ASYNC220
                                   str(gateway.media_port), str(calls), "2", str(seconds), "/stream/", "3"],
                                  stdout=subprocess.DEVNULL, stdin=subprocess.PIPE, text=True)
        await asyncio.sleep(3 + 2 + seconds / 2)  # set-up, the hold before audio, then mid-window
        live = len(gateway.registry.live_stats())
        t0 = time.perf_counter()
        gc.collect()
        full_ms = (time.perf_counter() - t0) * 1000
        now = _types()
        diff = collections.Counter({k: now[k] - idle.get(k, 0) for k in now})
        result = {"calls": calls, "live_calls": live, "full_collection_ms": round(full_ms, 1),
                  "tracked_per_call": round(sum(diff.values()) / calls, 1),
                  "by_type_per_call": [[k, round(v / calls, 1)] for k, v in diff.most_common(20)]}
        await gateway.shutdown(drain_timeout=0.5)
        return result
    finally:
        for proc in (client, fake):
            if proc is not None:
                proc.kill()
                proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    print(json.dumps(asyncio.run(measure(a.calls, a.host, a.seconds))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
