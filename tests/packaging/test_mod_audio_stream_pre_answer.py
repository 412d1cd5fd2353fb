"""A stream that never connects is refused before answer (patch 0003): `uuid_audio_stream start` only
pre-answers, the project's dialplan answers once the stream is up and otherwise hangs up with
NORMAL_TEMPORARY_FAILURE, which the caller (the edge, here SIPp as the carrier) gets as 503 and fails
over on. The stock voxcom build answers in `start`, so the caller gets 200 and then a BYE.

The gateway's WebSocket port is closed before the call: the start script's readiness probe is not
configured for it (it passes), the WebSocket connect is refused."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # `from conftest import` at run time picks whichever area's conftest loaded last
    from conftest import Rig

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

# 127.0.0.194-197: this file's own addresses (one caller + one FreeSWITCH per build).
ADDRS = {"patched": ("127.0.0.194", "127.0.0.195"), "voxcom": ("127.0.0.196", "127.0.0.197")}


async def _call_refused_stream(rig_factory, edition: str, expect: int) -> Rig:
    caller_ip, fs_ip = ADDRS[edition]
    rig: Rig = await rig_factory(edition, caller_ip=caller_ip, fs_ip=fs_ip)
    await rig.server.close()  # nothing listens on the stream URL any more
    sipp = rig.call("refused", expect=expect, wait_bye_s=15, timeout_s=40)
    try:
        rc = await asyncio.to_thread(sipp.wait, 45)
    finally:
        sipp.stop()
    responses = [m.first_line for m in sipp.messages() if m.direction == "received"
                 and m.first_line.startswith("SIP/2.0")]
    finals = [r for r in responses if not r.startswith("SIP/2.0 1")]
    print(f"{edition}: responses {responses}")
    assert rc == 0, f"{edition}: the caller did not get {expect} (finals {finals})"
    return rig


async def test_patched_build_lets_the_dialplan_refuse_the_call_with_503_before_answer(rig_factory):
    await _call_refused_stream(rig_factory, "patched", 503)


async def test_stock_voxcom_build_answers_the_call_before_the_stream_connects(rig_factory):
    """The defect: the caller is answered (200), then hung up; the edge cannot fail over."""
    await _call_refused_stream(rig_factory, "voxcom", 200)
