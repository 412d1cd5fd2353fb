"""Fixtures of the ESL area: a loopback fake FreeSWITCH speaking captured bytes, and a client to it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

# pytest puts tests/ on sys.path (rootdir conftest without __init__.py), where tests/gateway/ would be
# found as a namespace package `gateway` ahead of the real one; another area's conftest then purges
# and re-imports gateway.*, and exception classes imported here stop matching the ones raised.
# Put the repository first and drop a namespace `gateway` imported by mistake (as tests/gateway does).
_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("gateway"), "__file__", "") is None:
    for _name in [n for n in sys.modules if n == "gateway" or n.startswith("gateway.")]:
        del sys.modules[_name]

# ruff: isort: off
import pytest  # noqa: E402
from fakes.freeswitch_esl import FakeFreeSwitch  # noqa: E402

from gateway.esl.client import EslClient  # noqa: E402


@pytest.fixture
async def fake_fs() -> AsyncIterator[FakeFreeSwitch]:
    fs = await FakeFreeSwitch().start()
    try:
        yield fs
    finally:
        await fs.close()


@pytest.fixture
async def esl(fake_fs: FakeFreeSwitch) -> AsyncIterator[EslClient]:
    client = EslClient(
        fake_fs.host,
        fake_fs.port,
        fake_fs.password,
        command_timeout=5,
        bgapi_timeout=5,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
