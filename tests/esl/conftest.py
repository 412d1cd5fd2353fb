"""Fixtures of the ESL area: a loopback fake FreeSWITCH speaking captured bytes, and a client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes.freeswitch_esl import FakeFreeSwitch

from gateway.esl.client import EslClient


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
