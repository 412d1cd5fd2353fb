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
    link._conn, link._ready = conn, True  # noqa: SLF001 - the send path alone, set up, no socket
    for frame in frames:
        link.append_audio(fmt.to_model(frame))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
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


@pytest.mark.parametrize("early_audio", [5, 0])
async def test_on_a_real_socket_appends_and_control_events_keep_their_order(early_audio: int) -> None:
    """Appends are written from the caller's frame at once when nothing waits before them, else queued
    behind the sender: either way the model receives the session set-up first (audio that came during
    the connect waits for it), then every append in order, a control event exactly where it was sent."""
    from websockets.asyncio.server import serve

    got: list[dict] = []
    done = asyncio.Event()

    async def record(ws) -> None:  # type: ignore[no-untyped-def]
        async for message in ws:
            got.append(json.loads(message))
            if len(got) == 2 + 40 + 2:
                done.set()

    async with serve(record, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        link = RealtimeLink(call_uuid="c", base_url=f"ws://127.0.0.1:{port}/v1", api_key="x", model="m",
                            profile="p", dispatch=lambda e: None, on_failure=lambda k, d: None,
                            connect_timeout=5.0, max_pending_audio=100)
        setup = [{"type": "session.update", "session": {"type": "realtime", "instructions": "x"}},
                 {"type": "response.create"}]
        runner = asyncio.create_task(link.run(setup))
        for k in range(early_audio):  # caller audio while the socket connects: waits for the set-up
            link.append_audio(bytes([k]) * 160)
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:  # polled each loop turn: appends start as
            if link.connected:  # soon as the socket is up
                break
            await asyncio.sleep(0)
        assert link.connected
        for k in range(early_audio, 40):
            link.append_audio(bytes([k]) * 160)
            if k == 13:  # not right before the sender runs: the next appends must wait behind it
                link.send({"type": "response.cancel"})
            if k == 31:
                link.send({"type": "conversation.item.truncate", "item_id": "i1", "content_index": 0,
                           "audio_end_ms": 100})
            if k % 3 == 0:
                await asyncio.sleep(0)  # the sender runs now and then, as between real frames
        await asyncio.wait_for(done.wait(), 10)
        await link.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    kinds = [e["type"] for e in got]
    assert kinds[:2] == ["session.update", "response.create"]
    sequence = [base64.b64decode(e["audio"])[0] if e["type"] == "input_audio_buffer.append" else e["type"]
                for e in got[2:]]
    assert sequence == [*range(14), "response.cancel", *range(14, 32), "conversation.item.truncate",
                        *range(32, 40)]
