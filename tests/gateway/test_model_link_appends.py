"""Caller audio towards the model: one `input_audio_buffer.append` per `model_append_ms` of audio, in
order, nothing lost or duplicated (issue 17). No socket: the link's send loop writes to a recording
connection."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from gateway.audio.formats import CallAudio
from gateway.call.model_link import RealtimeLink


class RecordingConn:
    def __init__(self) -> None:
        self.raw: list[str] = []

    async def send_raw(self, data: str) -> None:
        self.raw.append(data)

    async def send(self, event: dict) -> None: ...


async def _appends(append_ms: int, frames: list[bytes]) -> list[bytes]:
    fmt = CallAudio(8000)
    link = RealtimeLink(call_uuid="c", base_url=None, api_key="x", model="m", profile="p",
                        dispatch=lambda e: None, on_failure=lambda k, d: None, connect_timeout=1.0,
                        max_pending_audio=100, append_bytes=fmt.model_bytes(append_ms))
    conn = RecordingConn()
    link._conn = conn  # noqa: SLF001 - the send loop alone
    sender = asyncio.create_task(link._send_loop())  # noqa: SLF001
    for frame in frames:
        link.append_audio(fmt.to_model(frame))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    sender.cancel()
    out = []
    for raw in conn.raw:
        event = json.loads(raw)
        assert event["type"] == "input_audio_buffer.append"
        out.append(base64.b64decode(event["audio"]))
    return out


@pytest.mark.parametrize("append_ms, per_append", [(20, 1), (60, 3), (100, 5)])
async def test_appends_carry_the_configured_audio_in_order(append_ms: int, per_append: int) -> None:
    frames = [bytes([k]) * 320 for k in range(10)]  # 10 frames of 20 ms L16, each a distinct value
    appends = await _appends(append_ms, frames)
    expected_model = b"".join(CallAudio(8000).to_model(f) for f in frames)
    whole = len(frames) // per_append
    assert [len(a) for a in appends] == [160 * per_append] * whole
    assert b"".join(appends) == expected_model[: 160 * per_append * whole]  # the rest waits for more


def test_setting_bounds() -> None:
    from pydantic import ValidationError

    from gateway.settings import Settings

    assert Settings().model_append_ms == 20
    with pytest.raises(ValidationError):
        Settings(model_append_ms=10)
    with pytest.raises(ValidationError):
        Settings(model_append_ms=200)
