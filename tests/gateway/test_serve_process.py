"""`gateway serve` as an operator runs it: a separate process, stopped with SIGTERM while a call is live."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid as uuidlib

import aiohttp
from gw_helpers import tone

from gateway.client.call import place_call


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_sigterm_drains_then_ends_live_calls_and_exits_cleanly():
    media, admin = free_port(), free_port()
    env = {**os.environ, "GATEWAY_MODEL_BACKEND": "null-silence", "GATEWAY_MEDIA_HOST": "127.0.0.1",
           "GATEWAY_MEDIA_PORT": str(media), "GATEWAY_ADMIN_PORT": str(admin), "GATEWAY_AUTH_TOKENS": "t1",
           "GATEWAY_SHUTDOWN_TIMEOUT_S": "1.5", "GATEWAY_LOG_JSON": "true"}
    # A plain Popen (not asyncio's): the test only signals and reaps it, never waits on it in the loop.
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=env,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            call = asyncio.create_task(place_call(
                f"ws://127.0.0.1:{media}/stream/{uuidlib.uuid4()}", tone(0.2, 8000), rate=8000, token="t1",
                metadata={"rate": 8000}, wait_for_greeting=False, reply_timeout=20, quiet_s=10,
                max_duration=20))
            await asyncio.sleep(0.5)
            async with http.get(f"http://127.0.0.1:{admin}/metrics") as r:  # collections timed from the start
                assert 'gateway_gc_pause_seconds_count{generation="2"}' in await r.text()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with http.get(f"http://127.0.0.1:{admin}/readyz") as r:
                assert r.status == 503  # draining: the load balancer stops sending
            refused = await place_call(f"ws://127.0.0.1:{media}/stream/{uuidlib.uuid4()}", tone(0.1, 8000),
                                       rate=8000, token="t1")
            assert refused.http_status == 503
            s = await asyncio.wait_for(call, 15)
        assert s.closed_by == "gateway" and s.close_code == 1001 and s.server_closed_tcp
        assert s.frames_received > 0  # the live call was served until the drain timeout
        assert proc.wait(15) == 0
        log = proc.stderr.read().decode()
        assert '"msg": "draining"' in log and '"msg": "stopped"' in log  # JSON log lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_every_garbage_collection_is_timed_by_generation():
    """A collection stops the event loop and every call's audio with it: `gateway serve` times each one
    into gateway_gc_pause_seconds{generation} (runs, total, how many over 5 ms), so an operator sees the
    pauses behind late frames."""
    import gc

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from gateway.runtime import count_gc_pauses

    registry = CollectorRegistry()
    pauses = Histogram("gc_pause_seconds", "test", ["generation"], buckets=(1e-3, 1.0), registry=registry)
    count_gc_pauses(pauses)
    count_gc_pauses(pauses)  # twice (run_server again in one process): still one observation per run
    garbage = [[i] for i in range(50_000)]  # enough for the full collection to take measurable time
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    del garbage

    def count(gen: str) -> float:
        return registry.get_sample_value("gc_pause_seconds_count", {"generation": gen}) or 0.0

    assert count("2") >= 2 and count("0") >= 1  # other collections may run meanwhile: never fewer
    assert registry.get_sample_value("gc_pause_seconds_sum", {"generation": "2"}) > 0
    assert b'gc_pause_seconds_count{generation="1"}' in generate_latest(registry)  # exposed, also at zero
