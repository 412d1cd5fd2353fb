"""kill -9 of `gateway serve` in the middle of a call loses nothing already said."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import aiohttp
from gw_helpers import tone

from gateway.client.call import place_call
from gateway.records.store import RecordFilter, open_store

HOST = "127.0.0.164"
SAID = "I need to move my appointment to Friday"
REPLY = "Friday at ten works, I have moved it."


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def test_kill_9_mid_call_loses_nothing_already_said(realtime_fake, tmp_path: Path):
    model = await realtime_fake(
        greeting_ms=600, reply_ms=600, speed=6.0, caller_transcript=SAID, reply_transcript=REPLY
    )
    media, admin = free_port(), free_port()
    db = tmp_path / "records.db"
    env = {
        **os.environ,
        "GATEWAY_MODEL_URL": model.url,
        "GATEWAY_MEDIA_HOST": HOST,
        "GATEWAY_MEDIA_PORT": str(media),
        "GATEWAY_ADMIN_HOST": HOST,
        "GATEWAY_ADMIN_PORT": str(admin),
        "GATEWAY_AUTH_TOKENS": "t1",
        "GATEWAY_RECORDS_URL": f"sqlite:///{db}",
        "GATEWAY_LOG_JSON": "true",
    }
    # A plain Popen: the test only signals and reaps it, never waits on it in the loop.
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    call_uuid = str(uuidlib.uuid4())
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://{HOST}:{admin}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        # A first, short call warms the process up (SDK imported, first model connection made).
        warm_uuid = str(uuidlib.uuid4())
        await place_call(
            f"ws://{HOST}:{media}/stream/{warm_uuid}",
            tone(0.1, 8000),
            rate=8000,
            token="t1",
            metadata={"caller": "+14155550999", "rate": 8000},
            reply_timeout=10,
        )
        # The caller keeps the line open (quiet_s): the call is live when the process dies.
        caller = asyncio.create_task(
            place_call(
                f"ws://{HOST}:{media}/stream/{call_uuid}",
                tone(0.8, 8000, lead_silence=1.5, tail_silence=0.6),
                rate=8000,
                token="t1",
                metadata={"caller": "+14155550111", "rate": 8000},
                wait_for_greeting=False,
                reply_timeout=30,
                quiet_s=30,
                max_duration=40,
            )
        )
        for _ in range(300):  # until the model has said its reply to the caller
            sent = model.sessions[-1].sent_types if len(model.sessions) == 2 else []
            if sent.count("response.output_audio_transcript.done") >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the 600 ms reply has played to the caller: it has been said
        assert not caller.done()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        await asyncio.wait_for(caller, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = open_store(f"sqlite:///{db}")
    killed, warm = store.list_records(RecordFilter())
    assert warm["call_id"] == warm_uuid and warm["outcome"] is not None  # ended before the crash
    assert killed["call_id"] == call_uuid and killed["ended_at"] is None  # never ended
    rec = store.get_record(call_uuid)
    assert [(t["role"], t["text"]) for t in rec["turns"]] == [
        ("agent", "Thank you for calling."),
        ("caller", SAID),
        ("agent", REPLY),
    ]
