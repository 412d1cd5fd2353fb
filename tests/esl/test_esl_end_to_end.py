"""End to end: `gateway serve` and `gateway model` as real processes, a caller streaming speech exactly as
mod_audio_stream does, and the loopback FreeSWITCH (captured ESL bytes) receiving the call control.

The caller asks for billing and says yes when the embedded engine asks back: it calls transfer_call, the
gateway maps the profile's target to extension 2001 and FreeSWITCH receives `uuid_transfer <uuid> 2001
XML ai-transfer`. The caller asks for a manager (and says yes): escalate sets X-AI-Reason / X-AI-Urgency /
X-AI-Summary as sip_h_ variables, then transfers to the profile's human queue (a SIP URI that leaves
through the Kamailio edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fakes.freeswitch_esl import FakeFreeSwitch

from gateway.client.call import place_call

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token"

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _wait_port(port: int, proc: asyncio.subprocess.Process, log: Path, within: float = 120) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"process exited early:\n{_tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"port {port} not listening:\n{_tail(log)}") from None
            await asyncio.sleep(0.2)


class Stack:
    def __init__(self, fs: FakeFreeSwitch, media_port: int, admin_port: int, logs: dict[str, Path]) -> None:
        self.fs, self.media_port, self.admin_port, self.logs = fs, media_port, admin_port, logs

    def stream_url(self, call_uuid: str) -> str:
        return f"ws://127.0.0.1:{self.media_port}/stream/{call_uuid}"


@contextlib.asynccontextmanager
async def run_stack(fake_fs: FakeFreeSwitch, tmp_path: Path, **env_extra: str) -> AsyncIterator[Stack]:
    engine_port, media_port, admin_port = _free_port(), _free_port(), _free_port()
    procs: list[asyncio.subprocess.Process] = []
    logs = {"model": tmp_path / "model.log", "serve": tmp_path / "serve.log"}
    env = dict(os.environ, GATEWAY_ESL_WORKERS=json.dumps({"fs1": fake_fs.address}),
               GATEWAY_AUTH_TOKENS=TOKEN, GATEWAY_LOG_LEVEL="INFO", **env_extra)
    try:
        with logs["model"].open("wb") as out:
            model = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "model", "--host", "127.0.0.1", "--port", str(engine_port),
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(model)
        with logs["serve"].open("wb") as out:
            serve = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "serve", "--media-host", "127.0.0.1", "--media-port",
                str(media_port), "--admin-host", "127.0.0.1", "--admin-port", str(admin_port),
                "--model-url", f"ws://127.0.0.1:{engine_port}/v1",
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(serve)
        await _wait_port(engine_port, model, logs["model"])
        await _wait_port(media_port, serve, logs["serve"])
        await _wait_port(admin_port, serve, logs["serve"])
        # The gateway's ESL connection to the worker is up and subscribed.
        await fake_fs.wait_for_command("event json", timeout=30)
        yield Stack(fake_fs, media_port, admin_port, logs)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    fake_fs = await FakeFreeSwitch(password="esl-test-secret").start()  # a placeholder password is refused
    try:
        async with run_stack(fake_fs, tmp_path) as running:
            yield running
    finally:
        await fake_fs.close()


async def _wait_call_control(stack: Stack, call_uuid: str) -> None:
    """Until the admin API shows the call live with its CallControl (events now reach it)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        while True:
            async with http.get(f"http://127.0.0.1:{stack.admin_port}/calls/{call_uuid}") as r:
                if r.status == 200 and (await r.json()).get("call_control"):
                    return
            await asyncio.sleep(0.1)


def speech(tmp_path: Path, text: str, then: str | None = None) -> Path:
    """The caller's words as a WAV; with `then`, a pause long enough for the agent's question, then
    those words (the embedded engine asks "Shall I ...?" before an action and acts on a yes)."""
    path = tmp_path / (text.replace(" ", "_") + ".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, timeout=30)
    if then is None:
        return path
    import numpy as np
    import soundfile

    first, rate = soundfile.read(path, dtype="int16")
    answer = speech(tmp_path, then)
    second, _ = soundfile.read(answer, dtype="int16")
    pause, tail = np.zeros(int(rate * 7.0), np.int16), np.zeros(int(rate * 4.0), np.int16)
    both = tmp_path / (path.stem + "_then_" + answer.stem + ".wav")
    soundfile.write(both, np.concatenate([first, pause, second, tail]), rate)
    return both


def metadata() -> dict[str, object]:
    # What freeswitch-conf's dialplan sends for a call to the front desk number.
    return {"caller": "+15551234567", "callee": "+15550100", "call_id": "CA" + "1" * 32, "worker": "fs1",
            "profile": "front-desk", "rate": 8000}


async def test_caller_asks_for_billing_and_freeswitch_receives_the_transfer(stack: Stack,
                                                                           tmp_path: Path) -> None:
    call_uuid = str(uuidlib.uuid4())
    stack.fs.add_channel(call_uuid)
    start = len(stack.fs.commands)
    summary = await place_call(stack.stream_url(call_uuid), speech(tmp_path, "transfer me to billing", "yes"),
                               rate=8000, metadata=metadata(), token=TOKEN, reply_timeout=20,
                               greeting_timeout=30)
    command = await stack.fs.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=30, start=start)
    assert command == f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"  # front-desk: billing -> 2001
    said = " ".join(t.get("text", "") for t in summary.transcripts)
    assert "Transferring you to billing now." in said, summary.transcripts


async def test_escalation_carries_reason_and_summary_headers(stack: Stack, tmp_path: Path) -> None:
    call_uuid = str(uuidlib.uuid4())
    stack.fs.add_channel(call_uuid)
    start = len(stack.fs.commands)
    await place_call(stack.stream_url(call_uuid), speech(tmp_path, "I want to speak to a manager", "yes"),
                     rate=8000, metadata=metadata(), token=TOKEN, reply_timeout=20, greeting_timeout=30)
    await stack.fs.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=30, start=start)
    cmds = [c for c in stack.fs.commands[start:] if call_uuid in c]
    reason = f"api uuid_setvar {call_uuid} sip_h_X-AI-Reason caller asked for a person"
    assert reason in cmds
    assert f"api uuid_setvar {call_uuid} sip_h_X-AI-Urgency normal" in cmds
    (summary_cmd,) = [c for c in cmds if "sip_h_X-AI-Summary" in c]
    header = stack.fs.channel_vars[call_uuid]["sip_h_X-AI-Summary"]
    assert "Riverside Dental" in header  # the greeting is part of the last turns
    assert "\n" not in summary_cmd and '"' not in header
    # Headers first, then the transfer to the profile's human queue through the edge.
    assert cmds[-2:] == [f"api uuid_setvar {call_uuid} ai_transfer_uri sip:+15550199@trunk",
                         f"api uuid_transfer {call_uuid} ai-transfer-uri XML ai-transfer"]
    assert cmds.index(reason) < cmds.index(cmds[-1])


async def test_admin_hangup_reaches_freeswitch_through_esl(stack: Stack, tmp_path: Path) -> None:
    call_uuid = str(uuidlib.uuid4())
    stack.fs.add_channel(call_uuid)
    call = asyncio.create_task(place_call(
        stack.stream_url(call_uuid), speech(tmp_path, "what are your opening hours"), rate=8000,
        metadata=metadata(), token=TOKEN, reply_timeout=20, greeting_timeout=30, max_duration=60))
    admin = f"http://127.0.0.1:{stack.admin_port}"
    try:
        await _wait_call_control(stack, call_uuid)
        async with aiohttp.ClientSession() as http:
            bad = {"target": "unknown target"}
            async with http.post(f"{admin}/calls/{call_uuid}/transfer", json=bad) as r:
                assert r.status >= 400  # refused before FreeSWITCH: spaces cannot be an extension
            async with http.post(f"{admin}/calls/{call_uuid}/hangup") as r:
                assert r.status == 200
        assert await stack.fs.wait_for_command(f"api uuid_kill {call_uuid}", timeout=10) == \
            f"api uuid_kill {call_uuid} NORMAL_CLEARING"
    finally:
        await asyncio.wait_for(call, 60)


@pytest.fixture
async def secret_fs() -> AsyncIterator[FakeFreeSwitch]:
    fs = await FakeFreeSwitch(password="esl-test-secret").start()  # a placeholder password is refused
    yield fs
    await fs.close()


async def test_file_mode_worker_plays_returned_files_and_breaks_on_barge_in(secret_fs: FakeFreeSwitch,
                                                                           tmp_path: Path) -> None:
    """GATEWAY_PLAYBACK_MODE={"fs1":"file"} (upstream MIT module): play events become back-to-back
    uuid_displace starts in order, and the caller talking over the greeting becomes uuid_break all."""
    fake_fs = secret_fs
    async with run_stack(fake_fs, tmp_path, GATEWAY_PLAYBACK_MODE=json.dumps({"fs1": "file"})) as stack:
        call_uuid = str(uuidlib.uuid4())
        fake_fs.add_channel(call_uuid)
        # The caller starts talking at once, over the greeting (no waiting for it): a barge-in.
        call = asyncio.create_task(place_call(
            stack.stream_url(call_uuid), speech(tmp_path, "what are your opening hours"), rate=8000,
            metadata=metadata(), token=TOKEN, wait_for_greeting=False, reply_timeout=20, max_duration=60))
        try:
            await _wait_call_control(stack, call_uuid)
            # What the upstream module fires for each streamAudio message the gateway sent.
            for n in range(3):
                await fake_fs.emit(call_uuid, "CUSTOM", subclass="mod_audio_stream::play",
                                   body=json.dumps({"audioDataType": "raw", "sampleRate": 8000,
                                                    "file": f"/tmp/{call_uuid}_{n}.tmp.r8"}))
            for n in range(3):
                expected = f"api uuid_displace {call_uuid} start /tmp/{call_uuid}_{n}.tmp.r8 0 mux"
                await fake_fs.wait_for_command(expected, timeout=10)
            await fake_fs.wait_for_command(f"api uuid_break {call_uuid} all", timeout=30)
        finally:
            await asyncio.wait_for(call, 60)
