"""Issue 11, findings 6 and 8, against `gateway serve` run as an operator runs it (a separate process):

- a token holder flooding streams from one address while real calls run: the real calls keep >= 95 %
  success, because one source never takes more than its share (per-source cap and rate);
- 1,000 half-open upgrades are closed after the header timeout, and a real call still works;
- upgrades aborted by the peer leave one log line each, no traceback;
- the embedded model killed: /readyz 503 within the probe interval; restarted: 200 again.

Every load loop is bounded in count and time; everything runs on this suite's loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import numpy as np
import pytest

from gateway.client import wsframe as wsf
from gateway.client.call import place_call

GATEWAY = "127.0.0.147"  # where `gateway serve` listens (helper gwsec: 127.0.0.140-159)
FLOOD_SOURCE = "127.0.0.141"  # the token holder's address
HALF_OPEN_SOURCE = "127.0.0.143"
ABORT_SOURCE = "127.0.0.142"
MODEL = "127.0.0.144"
TOKEN = "stream-token-0123456789"

pytestmark = pytest.mark.slow


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    media: int
    admin: int
    log_path: str

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


@contextlib.asynccontextmanager
async def serve(tmp_path, **env: str) -> AsyncIterator[Served]:
    media, admin = free_port(GATEWAY), free_port(GATEWAY)
    full = {**os.environ, "GATEWAY_MEDIA_HOST": GATEWAY, "GATEWAY_MEDIA_PORT": str(media),
            "GATEWAY_ADMIN_HOST": GATEWAY, "GATEWAY_ADMIN_PORT": str(admin), "GATEWAY_AUTH_TOKENS": TOKEN,
            "GATEWAY_MODEL_BACKEND": "null-echo", "GATEWAY_SHUTDOWN_TIMEOUT_S": "1",
            "GATEWAY_LOG_JSON": "true", **env}
    log_path = str(tmp_path / f"gateway-{media}.log")
    with open(log_path, "wb") as log:  # noqa: ASYNC230 - once, before the gateway runs
        # A plain Popen: the test only signals and reaps it. Its log goes to a file (no pipe to fill).
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=full,  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL, stderr=log)
    served = Served(proc, media, admin, log_path)
    try:
        await wait_status(f"http://{GATEWAY}:{admin}/readyz", 200, 20)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def readyz(url: str) -> int | None:
    try:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_status(url: str, status: int, within: float) -> float:
    """Seconds until `url` answered `status` (fails the test after `within`)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if await readyz(url) == status:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {within} s")


async def open_stream(port: int, source: str) -> tuple[int | None, asyncio.StreamWriter | None]:
    """One upgrade from `source` with the stream token, as mod_audio_stream sends it, plus the metadata
    frame. Returns the HTTP status and, when upgraded, the open writer (the stream is held)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(GATEWAY, port, local_addr=(source, 0)), 5)
    except (OSError, TimeoutError):
        return None, None
    request, _ = wsf.upgrade_request(GATEWAY, port, f"/stream/{uuidlib.uuid4()}",
                                     {"Authorization": f"Bearer {TOKEN}"})
    writer.write(request)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split()[1])
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        writer.transport.abort()
        return None, None
    if status != 101:
        writer.transport.abort()
        return status, None
    writer.write(wsf.encode_frame(wsf.OP_TEXT, json.dumps({"rate": 8000, "caller": "+15550100"}).encode()))
    return status, writer


async def real_call(port: int) -> bool:
    s = await place_call(f"ws://{GATEWAY}:{port}/stream/{uuidlib.uuid4()}",
                         (0.3 * 32767 * np.sin(np.arange(8000) * 2 * np.pi * 300 / 8000)).astype(np.int16),
                         rate=8000, token=TOKEN, metadata={"rate": 8000}, wait_for_greeting=False,
                         reply_timeout=8, quiet_s=0.5, max_duration=20, connect_timeout=8)
    return s.http_status == 101 and s.frames_received > 0 and not s.errors


async def test_a_stream_flood_from_one_token_holder_leaves_real_calls_their_share(tmp_path):
    # Capacity 80 calls; one source may hold 30 and open 20/s. Before per-source admission the flood
    # took all 80 slots and every real call was refused.
    async with serve(tmp_path, GATEWAY_MAX_CALLS="80", GATEWAY_MAX_STREAMS_PER_SOURCE="30",
                     GATEWAY_STREAM_RATE_PER_SOURCE="20", GATEWAY_STREAM_BURST_PER_SOURCE="30") as gw:
        held: list[asyncio.StreamWriter] = []
        statuses: list[int | None] = []
        try:
            # 300 flood streams, 50 at a time as fast as the gateway answers (bounded: < 60 s).
            t0 = time.monotonic()
            for _ in range(6):
                results = await asyncio.gather(*(open_stream(gw.media, FLOOD_SOURCE) for _ in range(50)))
                for status, writer in results:
                    statuses.append(status)
                    if writer is not None:
                        held.append(writer)
                assert time.monotonic() - t0 < 60
            assert len(statuses) == 300
            # 20 real calls from another source while the flood holds its streams.
            ok = await asyncio.gather(*(real_call(gw.media) for _ in range(20)))
            assert sum(ok) >= 19, f"only {sum(ok)}/20 real calls succeeded during the flood"
            assert 0 < len(held) <= 30  # the flood got its share and no more
            assert statuses.count(429) + statuses.count(503) >= 250  # refused before any upgrade
        finally:
            for writer in held:
                writer.transport.abort()
        log = gw.log()
        assert "Traceback" not in log


async def test_half_open_upgrades_are_closed_after_the_header_timeout(tmp_path):
    async with serve(tmp_path, GATEWAY_UPGRADE_HEADER_TIMEOUT_S="1.0") as gw:
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            for _ in range(10):  # 1,000 connections, each an upgrade request that never finishes
                batch = await asyncio.gather(*(asyncio.open_connection(
                    GATEWAY, gw.media, local_addr=(HALF_OPEN_SOURCE, 0)) for _ in range(100)))
                for reader, writer in batch:
                    writer.write(f"GET /stream/{uuidlib.uuid4()} HTTP/1.1\r\nHost: {GATEWAY}\r\n".encode())
                    conns.append((reader, writer))

            async def closed_by_gateway(reader: asyncio.StreamReader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(1024), 20) == b""
                except ConnectionError:
                    return True
                except TimeoutError:
                    return False

            t0 = time.monotonic()
            closed = await asyncio.gather(*(closed_by_gateway(r) for r, _ in conns))
            took = time.monotonic() - t0
        finally:
            for _, writer in conns:
                writer.transport.abort()
        assert sum(closed) == 1000, f"{1000 - sum(closed)} half-open upgrades still held after 20 s"
        assert took < 15
        assert await real_call(gw.media)  # the gateway still serves calls
        log = gw.log()
        assert log.count("no complete upgrade request in time") == 1000  # one line each
        assert "Traceback" not in log


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()


async def test_upgrades_aborted_by_the_peer_log_one_line_and_no_traceback(tmp_path):
    async with serve(tmp_path) as gw:
        async def abort_after(stage: str) -> None:
            reader, writer = await asyncio.open_connection(GATEWAY, gw.media, local_addr=(ABORT_SOURCE, 0))
            request, _ = wsf.upgrade_request(GATEWAY, gw.media, f"/stream/{uuidlib.uuid4()}",
                                             {"Authorization": f"Bearer {TOKEN}"})
            writer.write(request)
            if stage == "after-101":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            else:
                await writer.drain()
            _reset(writer)

        for stage in ("mid-upgrade", "after-101"):
            for _ in range(4):  # 200 aborts in bounded batches
                await asyncio.gather(*(abort_after(stage) for _ in range(25)))
        await asyncio.sleep(1.5)
        assert await real_call(gw.media)
        log = gw.log()
        assert "Traceback" not in log, log[:3000]
        # Every line the gateway wrote is one JSON object: no multi-line traceback anywhere.
        for line in log.splitlines():
            json.loads(line)


async def test_readiness_follows_the_model_dying_and_coming_back(tmp_path):
    port = free_port(MODEL)
    engine_cmd = [sys.executable, "-m", "gateway", "model", "--host", MODEL, "--port", str(port),
                  "--pace", "0"]

    def start_engine() -> subprocess.Popen[bytes]:
        return subprocess.Popen(engine_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    engine = start_engine()
    try:
        for _ in range(200):  # the engine listens
            with socket.socket() as s:
                if s.connect_ex((MODEL, port)) == 0:
                    break
            await asyncio.sleep(0.1)
        async with serve(tmp_path, GATEWAY_MODEL_BACKEND="realtime",
                         GATEWAY_MODEL_URL=f"ws://{MODEL}:{port}/v1", GATEWAY_MODEL_PROBE_INTERVAL_S="1.0",
                         GATEWAY_MODEL_PROBE_TIMEOUT_S="1.0") as gw:
            url = f"http://{GATEWAY}:{gw.admin}/readyz"
            assert await readyz(url) == 200
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
            # Within one probe interval (plus the probe's own timeout and scheduling slack under load).
            await wait_status(url, 503, 1.0 + 1.0 + 2.0)
            engine = start_engine()
            await wait_status(url, 200, 30)  # the engine's start-up plus one interval
            assert "model unreachable: not ready" in gw.log() and "model reachable again: ready" in gw.log()
    finally:
        if engine.poll() is None:
            engine.kill()
        engine.wait(10)


async def test_a_refused_connection_is_not_kept_alive_past_the_header_timeout(tmp_path):
    async with serve(tmp_path, GATEWAY_UPGRADE_HEADER_TIMEOUT_S="1.0") as gw:
        reader, writer = await asyncio.open_connection(GATEWAY, gw.media, local_addr=(HALF_OPEN_SOURCE, 0))
        try:
            request, _ = wsf.upgrade_request(GATEWAY, gw.media, f"/stream/{uuidlib.uuid4()}",
                                             {"Authorization": "Bearer wrong-token-0123456789"})
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert int(head.split()[1]) == 401
            t0 = time.monotonic()
            with contextlib.suppress(ConnectionError):
                while await asyncio.wait_for(reader.read(4096), 15):  # the 401 body, then EOF
                    pass
            assert time.monotonic() - t0 < 10  # closed, not kept alive for aiohttp's default 75 s
        finally:
            writer.transport.abort()
