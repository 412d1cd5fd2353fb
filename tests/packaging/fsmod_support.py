"""The patched mod_audio_stream build (built once into a cache outside the git tree) and the gateway's end
of the module's WebSocket, speaking the module's protocol: a metadata text frame and L16 binary frames in,
`streamAudio` JSON out. Shared by tests/packaging and benchmarks/freeswitch_worker.py; FreeSWITCH, SIPp and
the caller's RTP come from tests/harness.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FS_CONF = ROOT / "freeswitch-conf"
PACKAGING = ROOT / "packaging" / "mod_audio_stream"
FS_PREFIX = Path(os.environ.get("FREESWITCH_PREFIX", "/opt/fs"))
FS_BIN = Path(os.environ.get("FREESWITCH_BIN", FS_PREFIX / "bin" / "freeswitch"))
EDITIONS = FS_PREFIX / "lib" / "freeswitch" / "mod-editions"


def have_freeswitch() -> bool:
    return FS_BIN.is_file() and (FS_PREFIX / "lib" / "pkgconfig" / "freeswitch.pc").is_file()


# ------------------------------------------------------------------------------ the build
def build_cache_dir() -> Path:
    """Outside the git tree, kept between runs: /var/cache/aivg-build when writable, else ~/.cache."""
    configured = os.environ.get("AIVG_BUILD_CACHE")
    if configured:
        return Path(configured)
    system = Path("/var/cache/aivg-build")
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return system
    except OSError:
        pass
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aivg-build"


def default_source() -> Path:
    name = re.search(r"^TARBALL=(.+)$", (PACKAGING / "SOURCE").read_text(), re.M)
    assert name, "SOURCE has no TARBALL"
    return ROOT.parent / "shared" / "freeswitch" / "src" / name.group(1).strip()


def build_patched_deb() -> Path:
    """Run build-deb.sh into a cache folder keyed by the source, the patches and the script."""
    source = default_source()
    h = hashlib.sha256()
    h.update(source.read_bytes())
    patches = sorted((PACKAGING / "patches").glob("*.patch"))
    inputs = [*patches, PACKAGING / "SOURCE", PACKAGING / "build-deb.sh"]
    for p in inputs:
        h.update(p.name.encode() + p.read_bytes())
    out = build_cache_dir() / f"mod_audio_stream-{h.hexdigest()[:16]}"
    result = subprocess.run([str(PACKAGING / "build-deb.sh"), "--source", str(source), "--out", str(out),
                             "--freeswitch-pkgconfig", str(FS_PREFIX / "lib" / "pkgconfig")],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"build-deb.sh failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def patched_module_so() -> Path:
    deb = build_patched_deb()
    unpacked = deb.parent / "unpacked"
    so = next(unpacked.rglob("mod_audio_stream.so"), None) if unpacked.is_dir() else None
    if so is None or so.stat().st_mtime < deb.stat().st_mtime:
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        so = next(unpacked.rglob("mod_audio_stream.so"))
    return so


def edition_so(edition: str) -> Path:
    """'patched' (built here), 'voxcom' (the stock fork) or 'upstream' (amigniter, file mode)."""
    return patched_module_so() if edition == "patched" else EDITIONS / edition / "mod_audio_stream.so"


# ------------------------------------------------------------------------------ the gateway's side
def stream_audio_message(pcm: bytes, rate: int = 8000) -> str:
    """A `streamAudio` reply as the gateway sends it (raw L16 little-endian at the stream's rate)."""
    return json.dumps({"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": rate,
                                                      "audioData": base64.b64encode(pcm).decode()}})


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """L16 little-endian sine: loud enough that the caller's end hears it as speech-level audio."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


@dataclass
class StreamSession:
    path: str
    metadata: dict
    ws: object
    opened: float
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    frames_in: int = 0


Behaviour = Callable[[StreamSession], "asyncio.Future[None] | object"]


class StreamServer:
    """The gateway's end of mod_audio_stream on a loopback port: accepts the module's WebSocket, reads the
    metadata text frame, counts caller frames, and runs `behaviour(session)` (which sends the replies)."""

    def __init__(self, ip: str, behaviour: Callable[[StreamSession], object]) -> None:
        self.ip = ip
        self.port = 0
        self.behaviour = behaviour
        self.sessions: asyncio.Queue[StreamSession] = asyncio.Queue()
        self.all: list[StreamSession] = []
        self._server: object | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.ip}:{self.port}/stream"

    async def start(self) -> None:
        from websockets.asyncio.server import serve
        self._server = await serve(self._handle, self.ip, 0, max_size=2**22, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()  # type: ignore[attr-defined]
            await self._server.wait_closed()  # type: ignore[attr-defined]

    async def _handle(self, ws: object) -> None:
        from websockets.exceptions import ConnectionClosed
        first = await ws.recv()  # type: ignore[attr-defined]
        session = StreamSession(ws.request.path, json.loads(first) if isinstance(first, str) else {}, ws,  # type: ignore[attr-defined]
                                time.monotonic())
        self.all.append(session)
        self.sessions.put_nowait(session)
        task = asyncio.ensure_future(self.behaviour(session))  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            async for msg in ws:  # type: ignore[attr-defined]
                if isinstance(msg, bytes):
                    session.frames_in += 1
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()
            task.cancel()


def make_temp_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
