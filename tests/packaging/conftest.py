"""Fixtures for the mod_audio_stream build: the patched .so (built once into a cache outside the tree) and a
FreeSWITCH + caller + gateway-side stream server rig on this folder's loopback addresses."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsmod_support import (FreeSwitch, RtpCaller, StreamServer, StreamSession, edition_so, have_freeswitch,
                           open_rtp_caller, patched_module_so)

# 127.0.0.120-139 belong to these tests and benchmarks/freeswitch_worker.py (130-139).
CALLER_IP = "127.0.0.120"
FS_IPS = {"voxcom": "127.0.0.121", "patched": "127.0.0.122", "upstream": "127.0.0.123"}
RTP_RANGES = {"voxcom": (21000, 21099), "patched": (21100, 21199), "upstream": (21200, 21299)}

needs_freeswitch = pytest.mark.skipif(not have_freeswitch(), reason="no FreeSWITCH build under FREESWITCH_PREFIX "
                                      "(/opt/fs: ../shared/freeswitch/install.sh)")


@pytest.fixture(scope="session")
def patched_so() -> Path:
    if not have_freeswitch():
        pytest.skip("no FreeSWITCH headers to build against")
    for tool in ("cmake", "g++", "pkg-config", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: `make deps` installs requirements/apt.txt")
    return patched_module_so()


@dataclass
class Rig:
    fs: FreeSwitch
    server: StreamServer
    caller: RtpCaller
    rtp_port: int
    workdir: Path

    def behave(self, behaviour: Callable[[StreamSession], object]) -> None:
        self.server.behaviour = behaviour


async def _idle(session: StreamSession) -> None:
    await session.closed.wait()


@pytest.fixture
async def rig_factory(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., object]]:
    made: list[Rig] = []

    async def make(edition: str) -> Rig:
        so = request.getfixturevalue("patched_so") if edition == "patched" else edition_so(edition)
        server = StreamServer(CALLER_IP, _idle)
        await server.start()
        caller, rtp_port = await open_rtp_caller(CALLER_IP)
        workdir = tmp_path / edition
        workdir.mkdir()
        fs = FreeSwitch(FS_IPS[edition], so, CALLER_IP, server.url, workdir, rtp_ports=RTP_RANGES[edition])
        rig = Rig(fs, server, caller, rtp_port, workdir)
        made.append(rig)
        await asyncio.to_thread(fs.start)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            await asyncio.to_thread(rig.fs.kill)
            await rig.server.close()
            if rig.caller.transport is not None:
                rig.caller.transport.close()
