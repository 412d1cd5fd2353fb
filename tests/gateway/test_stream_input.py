"""What mod_audio_stream really sends, byte for byte (shared/fixtures), and every kind of bad input:
each refused with a close code (or an HTTP status before the upgrade) while another call goes on."""

from __future__ import annotations

import asyncio
import json
import os
import uuid as uuidlib

import pytest
from gw_helpers import FIXTURES, RawStream, fixture_request, tone

from gateway.client.call import place_call
from gateway.client.wsframe import OP_BINARY, OP_TEXT, encode_frame
from gateway.metrics import REGISTRY

STACKS = pytest.mark.parametrize("media_stack", ["aiohttp", "raw"])  # GATEWAY_MEDIA_STACK


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def silence_frame(rate: int) -> bytes:
    return encode_frame(OP_BINARY, bytes(rate * 2 // 50))


async def wait_gone(gw, call_uuid: str, seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if call_uuid not in gw.calls:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("module", ["upstream", "voxcom"])
@STACKS
async def test_captured_stream_with_stop_text_is_served_and_tcp_closed(make_gateway, fake_model, module):
    """Real upgrade request (no space after colons, token via STREAM_EXTRA_HEADERS), real metadata frame,
    640-byte frames with the first two together, then the real `stop {"final":"bye"}` bytes."""
    model = await fake_model(greeting_ms=400, speed=8.0)
    gw = await make_gateway(model_url=model.url)
    call_uuid = new_uuid()
    raw = await RawStream.open(gw.media_port, fixture_request(f"ws_{module}_mono16k", call_uuid))
    assert raw.status == 101
    raw.write((FIXTURES / f"ws_{module}_mono16k_first_text_frame.bin").read_bytes())
    raw.write(silence_frame(16000) + silence_frame(16000))  # the first two arrive together
    for _ in range(48):
        await asyncio.sleep(0.02)
        raw.write(silence_frame(16000))
    session = gw.calls[call_uuid]
    assert session.rate == 16000 and session.meta.extra == {"fixture": "mono16k"}
    for _ in range(50):
        if session.stats.frames_in == 50:
            break
        await asyncio.sleep(0.01)
    assert session.stats.frames_in == 50
    raw.write((FIXTURES / f"ws_{module}_mono16k_after_stop_text.bin").read_bytes())
    code, tcp_closed, frames = await raw.read_until_close()
    assert code == 1000 and tcp_closed  # close answered and TCP dropped by the gateway
    assert any(f.opcode == OP_TEXT and b'"streamAudio"' in f.payload for f in frames)  # greeting played
    assert await wait_gone(gw, call_uuid)
    update = model.sessions[0].of_type("session.update")[0]["session"]
    assert update["audio"]["input"]["format"]["rate"] == 24000


@STACKS
async def test_captured_hangup_close_ends_the_call(make_gateway, fake_model):
    model = await fake_model(greeting_ms=300)
    gw = await make_gateway(model_url=model.url, auth_tokens="")  # the 8k captures carry no token
    call_uuid = new_uuid()
    before = metric("gateway_calls_total", outcome="caller_hangup")
    raw = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_hangup8k", call_uuid))
    raw.write((FIXTURES / "ws_voxcom_hangup8k_first_text_frame.bin").read_bytes())
    raw.write(silence_frame(8000) * 5)
    await asyncio.sleep(0.2)
    assert gw.calls[call_uuid].rate == 8000
    raw.write((FIXTURES / "ws_voxcom_hangup8k_after_hangup.bin").read_bytes())
    code, tcp_closed, _ = await raw.read_until_close()
    assert code == 1000 and tcp_closed
    assert await wait_gone(gw, call_uuid)
    assert metric("gateway_calls_total", outcome="caller_hangup") == before + 1


@STACKS
async def test_socket_dropped_without_close_frame_ends_the_call_cleanly(make_gateway, fake_model):
    model = await fake_model(greeting_ms=2000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    call_uuid = new_uuid()
    raw = await RawStream.open(gw.media_port, fixture_request("ws_upstream_mono16k", call_uuid))
    raw.write((FIXTURES / "ws_upstream_mono16k_first_text_frame.bin").read_bytes() + silence_frame(16000) * 3)
    await asyncio.sleep(0.3)
    assert call_uuid in gw.calls
    raw.close()  # TCP reset, no close frame, no final text
    assert await wait_gone(gw, call_uuid)


def _swap_token(request: bytes, token: bytes) -> bytes:
    return request.replace(b"Authorization:Bearer abc", b"Authorization:Bearer " + token)


BAD_STREAMS = {
    # name: (what is sent after the real upgrade, expected close code)
    "oversized frame": (encode_frame(OP_BINARY, bytes(40000)), 1009),
    "odd-length PCM": (encode_frame(OP_BINARY, bytes(641)), 1007),
    "binary garbage": (b"\x47\x45\x54 / HTTP/1.1\r\n\r\n" + os.urandom(64), 1002),
    "invalid metadata JSON": (encode_frame(OP_TEXT, b'{"caller": "+1555'), 1007),
    "unknown frame type": (encode_frame(0x3, b"what is this"), 1002),
    "wrong sample rate": (encode_frame(OP_TEXT, json.dumps({"rate": 44100}).encode()), 1003),
    "metadata not an object": (encode_frame(OP_TEXT, b'"mono16k"'), 1007),
}


@STACKS
async def test_bad_input_is_refused_and_a_concurrent_call_is_unaffected(make_gateway, fake_model,
                                                                        question_wav):
    model = await fake_model(greeting_ms=1500, reply_ms=1000, speed=2.0)
    gw = await make_gateway(model_url=model.url)
    good = asyncio.create_task(place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{new_uuid()}", question_wav,
                                          rate=8000, token="rotated-token", metadata={"rate": 8000}))
    await asyncio.sleep(0.3)
    auth_before = metric("gateway_auth_failures_total")

    async def bad(name: str, payload: bytes, expected: int) -> tuple[str, int | None, bool]:
        raw = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_mono16k", new_uuid()))
        assert raw.status == 101, name
        # valid 16 kHz metadata first (real bytes) unless the case is about the metadata itself
        if "metadata" not in name and "rate" not in name:
            metadata = (FIXTURES / "ws_voxcom_mono16k_first_text_frame.bin").read_bytes()
            raw.write(metadata + silence_frame(16000))
            await asyncio.sleep(0.05)
        raw.write(payload)
        code, tcp_closed, _ = await raw.read_until_close()
        return name, code, tcp_closed

    results = await asyncio.gather(*(bad(n, p, c) for n, (p, c) in BAD_STREAMS.items()))
    for name, code, tcp_closed in results:
        assert code == BAD_STREAMS[name][1], f"{name}: close code {code}"
        assert tcp_closed, f"{name}: TCP left open"

    # authentication is refused before the upgrade (HTTP 401), several tokens are valid at once
    missing = await RawStream.open(gw.media_port, fixture_request("ws_voxcom_mono8k", new_uuid()))
    wrong = await RawStream.open(
        gw.media_port, _swap_token(fixture_request("ws_voxcom_mono16k", new_uuid()), b"abd"))
    rotated = await RawStream.open(
        gw.media_port, _swap_token(fixture_request("ws_voxcom_mono16k", new_uuid()), b"rotated-token"))
    assert (missing.status, wrong.status, rotated.status) == (401, 401, 101)
    rotated.close()
    assert metric("gateway_auth_failures_total") == auth_before + 2

    s = await asyncio.wait_for(good, 30)
    assert s.errors == []
    assert s.greeting_s == pytest.approx(1.5, abs=0.03) and s.reply_s == pytest.approx(2.5, abs=0.05)
    # and the process still serves new calls
    again = await place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{new_uuid()}", tone(0.1, 8000),
                             rate=8000, token="abc", metadata={"rate": 8000}, reply_timeout=1.0)
    assert again.greeting_s == pytest.approx(1.5, abs=0.03)


async def test_upgrade_refusals_before_the_websocket_exists(make_gateway, fake_model):
    model = await fake_model(greeting_ms=3000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    call_uuid = new_uuid()
    first = await RawStream.open(gw.media_port, fixture_request("ws_upstream_mono16k", call_uuid))
    assert first.status == 101
    duplicate = await RawStream.open(gw.media_port, fixture_request("ws_upstream_mono16k", call_uuid))
    assert duplicate.status == 409  # one stream per channel uuid
    bad_uuid = await RawStream.open(gw.media_port, fixture_request("ws_upstream_mono16k", "..%2F..%2Fetc"))
    assert bad_uuid.status in (400, 404)
    plain = await RawStream.open(gw.media_port, b"GET /stream/" + new_uuid().encode() +
                                 b" HTTP/1.1\r\nHost:x\r\nAuthorization:Bearer abc\r\n\r\n")
    assert plain.status == 400  # not a WebSocket upgrade
    first.close()


@STACKS
async def test_graceful_shutdown_refuses_new_streams_then_ends_live_calls(make_gateway, fake_model):
    import aiohttp

    model = await fake_model(greeting_ms=20000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    live = asyncio.create_task(place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{new_uuid()}",
                                          tone(0.1, 8000), rate=8000, token="abc", metadata={"rate": 8000},
                                          greeting_timeout=30, reply_timeout=30))
    await asyncio.sleep(0.5)
    shutdown = asyncio.create_task(gw.shutdown(drain_timeout=1.0))
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gw.admin_port}/readyz") as r:
            assert r.status == 503
        async with http.get(f"http://127.0.0.1:{gw.admin_port}/healthz") as r:
            assert r.status == 200
        # The workers probe the media listener (the admin API is usually on localhost only).
        async with http.get(f"http://127.0.0.1:{gw.media_port}/readyz") as r:
            assert r.status == 503 and await r.text() == "not ready\n"
    refused = await RawStream.open(gw.media_port, fixture_request("ws_upstream_mono16k", new_uuid()))
    assert refused.status == 503
    assert not live.done()  # the live call keeps going during the drain
    await asyncio.wait_for(shutdown, 10)
    s = await asyncio.wait_for(live, 10)
    assert s.closed_by == "gateway" and s.close_code == 1001 and s.server_closed_tcp
    assert s.greeting_s > 1.0  # it was heard until the drain timeout ended it


async def test_media_listener_answers_readiness_without_a_token(make_gateway, fake_model):
    # FreeSWITCH's Lua watchdog and per-call start GET /readyz on the media address (freeswitch-conf
    # gateway_ready_urls): no token, and nothing beyond ready / not ready.
    import aiohttp

    model = await fake_model()
    gw = await make_gateway(model_url=model.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gw.media_port}/readyz") as r:
            assert r.status == 200 and await r.text() == "ready\n"
        async with http.get(f"http://127.0.0.1:{gw.media_port}/healthz") as r:
            assert r.status == 200 and await r.text() == "ok\n"
        async with http.get(f"http://127.0.0.1:{gw.media_port}/calls") as r:
            assert r.status == 404  # the admin API stays on its own listener
