"""Fixtures for the mod_audio_stream build: the patched .so (built once into a cache outside the tree) and a
rig of the real FreeSWITCH (tests/harness) with a chosen build, a caller's RTP endpoint and the gateway's
end of the module's WebSocket, on this folder's loopback addresses."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fsmod_support import StreamServer, StreamSession, have_freeswitch, patched_module_so
from harness.freeswitch import FreeSwitch
from harness.rtp import RtpEndpoint
from harness.sipp import Sipp, caller

# 127.0.0.120-129 belong to these tests, 130-139 to benchmarks/freeswitch_worker.py.
CALLER_IP = "127.0.0.120"
FS_IPS = {"voxcom": "127.0.0.121", "patched": "127.0.0.122", "upstream": "127.0.0.123"}


@pytest.fixture(scope="session")
def patched_so() -> Path:
    if not have_freeswitch():
        pytest.skip("no FreeSWITCH build with headers under /opt/fs (../shared/freeswitch/install.sh)")
    for tool in ("cmake", "g++", "pkg-config", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: `make deps` installs requirements/apt.txt")
    return patched_module_so()


@dataclass
class Rig:
    fs: FreeSwitch
    server: StreamServer
    rtp: RtpEndpoint
    workdir: Path

    def behave(self, behaviour: Callable[[StreamSession], object]) -> None:
        self.server.behaviour = behaviour

    def call(self, name: str, **kwargs: object) -> Sipp:
        """The carrier calls 1000 straight at this worker (the SIP profile's ACL admits 127.0.0.0/8)."""
        return caller(self.workdir, name, CALLER_IP, f"{self.fs.host}:{self.fs.sip_port}", self.rtp,
                      **kwargs).start()  # type: ignore[arg-type]


async def _idle(session: StreamSession) -> None:
    await session.closed.wait()


@pytest.fixture
async def rig_factory(tmp_path: Path, freeswitch_factory: Callable[..., FreeSwitch],
                      request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., object]]:
    """``await make(edition)``: 'patched' (packaging/mod_audio_stream), or 'voxcom' / 'upstream' (the
    shared build's editions)."""
    made: list[Rig] = []

    async def make(edition: str) -> Rig:
        so = request.getfixturevalue("patched_so") if edition == "patched" else None
        server = StreamServer(CALLER_IP, _idle)
        await server.start()
        kwargs: dict[str, object] = {"vars": {"gateway_stream_url": server.url, "log_level": "info"}}
        if so is not None:
            kwargs["audio_stream_so"] = so
        else:
            kwargs["edition"] = edition
        fs = await asyncio.to_thread(freeswitch_factory, FS_IPS[edition], **kwargs)
        rig = Rig(fs, server, RtpEndpoint(CALLER_IP, name="caller").start(), tmp_path / f"sipp-{edition}")
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.rtp.close()
            await rig.server.close()
