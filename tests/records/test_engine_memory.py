"""Caller memory with the embedded engine: a caller who gave their name is greeted by it on their next
call. A real `gateway model` process, a real `gateway serve` (in-process) with a SQLite store, and the
caller's words spoken by espeak-ng."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rec_helpers import TOKEN, profiles_dir

from gateway.client.call import place_call

HOST = "127.0.0.220"  # records2's loopback address (engine, media, admin)
CALLER = "+14155550177"
INTRODUCTION = "hi my name is Maria Lopez"


def _engine_profiles(tmp: Path) -> Path:
    """The shipped profiles, front-desk with memory on and one more phrase: the caller's introduction."""
    out = profiles_dir(tmp, memory={"mode": "on", "turns": 4})
    path = out / "front-desk.yaml"
    data = yaml.safe_load(path.read_text())
    data["dialogue"]["intents"].insert(
        0, {"name": "introduce", "examples": [INTRODUCTION], "reply": "Nice to meet you. How can I help?"}
    )
    path.write_text(yaml.safe_dump(data))
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (requirements/apt.txt)")
    tmp = tmp_path_factory.mktemp("engine-memory")
    pdir = _engine_profiles(tmp)
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log_path = tmp / "engine.log"
    log = log_path.open("wb")
    env = dict(os.environ, GATEWAY_PROFILES_DIR=str(pdir))
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "model", "--host", HOST, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gateway model exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("gateway model did not listen")
                time.sleep(0.1)
        yield f"ws://{HOST}:{port}/v1", pdir
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def introduction_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "introduction.wav"
    subprocess.run(["espeak-ng", "-w", str(path), INTRODUCTION], check=True, timeout=30)
    return path


async def _call(gw: Any, audio: Any, caller: str) -> Any:
    return await place_call(
        f"ws://{HOST}:{gw.media_port}/stream/{uuidlib.uuid4()}", audio, rate=8000,
        metadata={"rate": 8000, "profile": "front-desk", "caller": caller, "callee": "+15550100"},
        token=TOKEN, greeting_timeout=30, reply_timeout=20,
    )


async def test_the_engine_greets_a_remembered_caller_by_name(
    records_gateway, engine, introduction_wav, tmp_path
):
    url, pdir = engine
    gw = await records_gateway(model_url=url, media_host=HOST, admin_host=HOST,
                               records_url=f"sqlite:///{tmp_path}/r.db", profiles_dir=pdir)
    first = await _call(gw, introduction_wav, CALLER)
    assert first.errors == [], first
    agent = [t["text"] for t in first.transcripts if t["role"] == "agent"]
    assert agent[0] == "Thank you for calling Riverside Dental. How can I help you today?"  # a stranger
    assert any("Nice to meet you" in t for t in agent[1:]), agent  # the engine heard the introduction
    for _ in range(200):
        mem = await gw.records.get_memory(CALLER)
        if mem:
            break
        await asyncio.sleep(0.05)
    assert mem and "Maria Lopez" in mem["summary"], mem

    # The same number again (written as another carrier writes it): greeted by name.
    second = await _call(gw, introduction_wav, "sip:+1-415-555-0177@carrier.example")
    assert second.errors == [], second
    agent = [t["text"] for t in second.transcripts if t["role"] == "agent"]
    assert agent[0] == "Hello Maria. Thank you for calling Riverside Dental. How can I help you today?"
    # The store's record of the second call holds the greeting the caller heard.
    for _ in range(200):
        rec = await gw.records.get_record(second.uuid)
        if rec and rec["turns"]:
            break
        await asyncio.sleep(0.05)
    assert rec["turns"][0]["role"] == "agent" and rec["turns"][0]["text"].startswith("Hello Maria."), rec

    # A different caller is not greeted by someone else's name.
    stranger = await _call(gw, introduction_wav, "+14155550999")
    agent = [t["text"] for t in stranger.transcripts if t["role"] == "agent"]
    assert agent[0] == "Thank you for calling Riverside Dental. How can I help you today?"

