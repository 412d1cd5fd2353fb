"""`gateway model` as operators and the media plane start it: a clear listening line on stderr, a real
conversation over loopback, a clean exit on SIGTERM; and the same engine with the network taken away."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_gateway_model_logs_listening_serves_the_sdk_and_stops_on_sigterm():
    from openai import AsyncOpenAI

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "model",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--pace",
        "0",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        line = b""
        async with asyncio.timeout(90):
            while b"listening" not in line:
                line = await proc.stderr.readline()
                assert line, "gateway model exited before listening"
        text = line.decode()
        assert f'url="ws://127.0.0.1:{port}/v1/realtime"' in text
        assert re.search(r"startup_s=[0-9.]+", text)

        client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)
        async with client.realtime.connect(
            model="gpt-realtime", extra_query={"profile": "front-desk"}
        ) as conn:
            await conn.response.create(response={"instructions": 'Say exactly: "Hello from the engine."'})
            async for event in conn:
                if event.type == "response.done":
                    assert event.response.output[0].content[0].transcript == "Hello from the engine."
                    break
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rc = await proc.wait()
        assert rc == 0
        rest = (await proc.stderr.read()).decode()
        assert "session opened" in rest and "stopping" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_engine_needs_no_network_under_unshare():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare / ip not installed")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -n not permitted here: {probe.stderr.decode().strip()}")
    script = Path(__file__).with_name("offline_call.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}" 18092'],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["network_gone"] is True
    assert "opening hour" in result["heard"].lower()
    assert result["reply"].startswith("Our opening hours are Monday to Friday")
    assert result["reply_audio_bytes"] > 3 * 8000  # over three seconds of μ-law


async def test_profiles_dir_from_env_selects_profiles_and_skips_a_broken_file(tmp_path):
    from openai import AsyncOpenAI

    (tmp_path / "front-desk.yaml").write_text((ROOT / "gateway/profiles/front-desk.yaml").read_text())
    (tmp_path / "pizza.yaml").write_text(
        "name: pizza\ngreeting: Pizza Palace, what can I get you?\n"
        "dialogue:\n  fallback_reply: Pardon?\n  intents:\n"
        "    - name: order\n      examples: [i would like a large pizza]\n"
        "      reply: One large pizza coming up.\n"
    )
    (tmp_path / "broken.yaml").write_text("dialogue: {intents: [{name: x, bogus_key: 1}]}\n")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "model",
        "--port",
        str(port),
        cwd=ROOT,
        env={**os.environ, "GATEWAY_PROFILES_DIR": str(tmp_path)},
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        lines = []
        async with asyncio.timeout(90):
            while not lines or b"listening" not in lines[-1]:
                lines.append(await proc.stderr.readline())
                assert lines[-1], b"".join(lines).decode()
        log = b"".join(lines).decode()
        assert "profile skipped" in log and "broken.yaml" in log
        assert 'profiles=["front-desk","pizza"]' in log

        client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{port}/v1", max_retries=0)
        async with client.realtime.connect(model="gpt-realtime", extra_query={"profile": "pizza"}) as conn:
            await conn.send(
                {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
            )
            await conn.send({"type": "response.create"})  # nothing said yet: the profile's greeting
            await conn.send(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "I would like a large pizza"}],
                    },
                }
            )
            await conn.send({"type": "response.create"})
            replies = []
            async for event in conn:
                if event.type == "response.done":
                    replies.append(event.response.output[0].content[0].text)
                    if len(replies) == 2:
                        break
        assert replies == ["Pizza Palace, what can I get you?", "One large pizza coming up."]
    finally:
        proc.terminate()
        await proc.wait()
