"""End to end through a real `gateway serve`: mod_audio_stream-shaped calls over real sockets, the gateway,
the official SDK, and a scripted Realtime-protocol server on loopback."""

from __future__ import annotations

import asyncio
import uuid as uuidlib

import aiohttp
import numpy as np
import pytest
from gw_helpers import tone

from gateway.client.call import place_call
from gateway.metrics import REGISTRY

LEAD_MS = 60

STACKS = pytest.mark.parametrize("media_stack", ["aiohttp", "raw"])  # GATEWAY_MEDIA_STACK


def url(gw, call_uuid: str | None = None) -> str:
    return f"ws://127.0.0.1:{gw.media_port}/stream/{call_uuid or uuidlib.uuid4()}"


def meta(rate: int = 8000, **kw) -> dict:
    return {"caller": "+15550111", "callee": "+15550100", "call_id": "CA0123456789", "worker": "fs1",
            "profile": "front-desk", "rate": rate, **kw}


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


@pytest.mark.parametrize("rate", [8000, 16000])
@STACKS
async def test_greeting_and_reply_arrive_paced_at_real_time(make_gateway, fake_model, question_wav, rate):
    model = await fake_model(greeting_ms=1000, reply_ms=1200, speed=4.0)
    gw = await make_gateway(model_url=model.url, playout_lead_ms=LEAD_MS)
    s = await place_call(url(gw), question_wav, rate=rate, metadata=meta(rate), token="abc")

    assert s.errors == [] and s.http_status == 101
    assert s.greeting_s == pytest.approx(1.0, abs=0.03)
    assert s.reply_s == pytest.approx(2.2, abs=0.05)  # greeting + reply, nothing lost, nothing doubled
    assert s.first_reply_latency_ms is not None
    # The model produced each reply 4x faster than real time; the caller must receive it at real time,
    # in 20 ms messages (never a burst that would sit unclearable in FreeSWITCH's buffers).
    reply = [t for t, _ in s.reply_arrivals][-60:]  # the 1.2 s answer, 60 frames of 20 ms
    assert all(n == rate * 2 // 50 for _, n in s.reply_arrivals[-59:])
    assert reply[-1] - reply[0] >= (1.2 - LEAD_MS / 1000 - 0.04)
    assert {t["role"] for t in s.transcripts} == {"caller", "agent"}

    (session,) = model.sessions
    assert session.invalid_client_events == []
    assert "profile=front-desk" in session.path and "model=" in session.path
    update = session.of_type("session.update")[0]["session"]
    expected = {"type": "audio/pcmu"} if rate == 8000 else {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["input"]["format"] == expected == update["audio"]["output"]["format"]
    greeting = session.of_type("response.create")[0]["response"]["instructions"]
    assert greeting == 'Say exactly: "Thank you for calling Riverside Dental. How can I help you today?"'
    # caller audio reached the model in the session's format (u-law 8k or PCM16 24k), none dropped
    per_second = 8000 if rate == 8000 else 48000
    assert session.appended_bytes == pytest.approx(s.frames_sent * 0.02 * per_second, rel=0.02)


@STACKS
async def test_barge_in_stops_playback_and_truncates_at_the_heard_point(make_gateway, fake_model):
    # A 4 s greeting generated at 2x real time: still being generated when the caller talks over it.
    model = await fake_model(greeting_ms=4000, reply_ms=600, speed=2.0)
    gw = await make_gateway(model_url=model.url, playout_lead_ms=LEAD_MS)
    caller = tone(0.8, 8000, lead_silence=1.0, tail_silence=0.5)  # speaks 1 s into the greeting
    before = metric("gateway_barge_ins_total")
    s = await place_call(url(gw), caller, rate=8000, metadata=meta(), token="abc", wait_for_greeting=False)

    (session,) = model.sessions
    assert session.invalid_client_events == []
    (cancel,) = session.of_type("response.cancel")  # the response was still active
    (truncate,) = session.of_type("conversation.item.truncate")
    heard = truncate["audio_end_ms"]
    greeting_received_ms = (s.reply_s - 0.6) * 1000
    assert 0 < heard <= session.generated_ms[truncate["item_id"]]
    assert "error" not in session.sent_types  # the model accepted the truncate point
    # The caller got at most one frame plus the lead beyond what the playout clock counted as heard...
    assert greeting_received_ms - heard <= LEAD_MS + 20 + 1
    # ...and playback really stopped: far less than the 4 s greeting reached FreeSWITCH.
    assert greeting_received_ms < 1600
    assert metric("gateway_barge_ins_total") == before + 1
    assert s.reply_s > greeting_received_ms / 1000  # the answer after the interruption was played


async def test_response_cancel_is_sent_only_while_a_response_is_active(make_gateway, fake_model):
    # Generated 20x faster than real time: the greeting is complete (response done) before the barge-in.
    model = await fake_model(greeting_ms=3000, reply_ms=400, speed=20.0)
    gw = await make_gateway(model_url=model.url, playout_lead_ms=LEAD_MS)
    caller = tone(0.6, 8000, lead_silence=1.0, tail_silence=0.4)
    s = await place_call(url(gw), caller, rate=8000, metadata=meta(), token="abc", wait_for_greeting=False)
    (session,) = model.sessions
    assert session.of_type("response.cancel") == []  # nothing to cancel: the model had finished
    (truncate,) = session.of_type("conversation.item.truncate")  # but the caller had not heard it all
    greeting_received_ms = (s.reply_s - 0.4) * 1000
    assert 0 < truncate["audio_end_ms"] < 3000
    assert 0 <= greeting_received_ms - truncate["audio_end_ms"] <= LEAD_MS + 20 + 1


@pytest.mark.parametrize("failure", ["error", "drop", "refused"])
async def test_model_failure_caller_hears_the_fallback_then_the_stream_ends(
        make_gateway, fake_model, fallback_prompts, failure):
    if failure == "refused":
        model_url = "ws://127.0.0.1:9/v1"  # discard port: nothing listens
    else:
        model = await fake_model(greeting_ms=3000, speed=1.0, fail=failure, fail_after_ms=300)
        model_url = model.url
    gw = await make_gateway(model_url=model_url)
    before = metric("gateway_fallbacks_total")
    s = await place_call(url(gw), tone(0.1, 8000), rate=8000, metadata=meta(), token="abc",
                         greeting_timeout=8.0, reply_timeout=8.0)
    prompt = fallback_prompts("front-desk", 8000)
    assert len(prompt) > 8000  # a real spoken prompt, not a beep
    assert s.reply_pcm.endswith(prompt)  # every sample of the fallback reached the caller, in order
    assert s.closed_by == "gateway" and s.close_code == 1000
    assert s.server_closed_tcp  # no lingering TCP that would block FreeSWITCH's hang-up
    assert metric("gateway_fallbacks_total") == before + 1


async def test_end_call_tool_hangs_up_after_the_goodbye_has_played(make_gateway, fake_model, question_wav):
    end_call = {"name": "end_call", "arguments": {"reason": "caller said bye"}}
    model = await fake_model(greeting_ms=500, reply_ms=800, tool=end_call)
    gw = await make_gateway(model_url=model.url)
    s = await place_call(url(gw), question_wav, rate=8000, metadata=meta(), token="abc")
    assert s.closed_by == "gateway" and s.close_code == 1000 and s.server_closed_tcp
    assert s.reply_s == pytest.approx(1.3, abs=0.03)  # the whole goodbye was heard before the hang-up
    (session,) = model.sessions
    (output,) = session.of_type("conversation.item.create")
    assert '"ok": true' in output["item"]["output"]


async def test_transfer_without_call_control_is_reported_to_the_model(make_gateway, fake_model, question_wav):
    model = await fake_model(greeting_ms=300, reply_ms=300, tool={"name": "transfer_call",
                                                                   "arguments": {"target": "billing"}})
    gw = await make_gateway(model_url=model.url)
    await place_call(url(gw), question_wav, rate=8000, metadata=meta(), token="abc", reply_timeout=3.0)
    (session,) = model.sessions
    (output,) = session.of_type("conversation.item.create")
    assert output["item"]["type"] == "function_call_output"
    assert "call control unavailable" in output["item"]["output"]
    # the failure is spoken: a response is requested after the tool output
    assert [e["type"] for e in session.received].count("response.create") == 2


async def test_admin_api_lists_and_hangs_up_a_live_call(make_gateway, fake_model):
    model = await fake_model(greeting_ms=10000, speed=1.0)
    gw = await make_gateway(model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    call = asyncio.create_task(place_call(url(gw, call_uuid), tone(0.1, 8000), rate=8000, metadata=meta(),
                                          token="abc", greeting_timeout=15, reply_timeout=15))
    admin = f"http://127.0.0.1:{gw.admin_port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(f"{admin}/calls") as r:
                calls = await r.json()
            if calls and calls[0]["frames_out"] > 10:
                break
            await asyncio.sleep(0.05)
        # The profile's default redaction policy masks the number, keeping the last four (issue 16).
        assert calls[0]["uuid"] == call_uuid and calls[0]["caller"] == "[PHONE ***0111]"
        assert calls[0]["profile"] == "front-desk" and calls[0]["state"] == "active"
        async with http.get(f"{admin}/calls/{call_uuid}") as r:
            assert r.status == 200 and (await r.json())["call_id"] == "CA0123456789"
        async with http.post(f"{admin}/calls/{call_uuid}/transfer", json={"target": "billing"}) as r:
            assert r.status == 503 and "call control" in (await r.json())["detail"]
        async with http.post(f"{admin}/calls/{call_uuid}/hangup") as r:
            assert r.status == 200
        s = await asyncio.wait_for(call, 10)
        assert s.closed_by == "gateway" and s.close_code == 1000 and s.server_closed_tcp
        async with http.get(f"{admin}/calls/{call_uuid}") as r:
            assert r.status == 404
        async with http.get(f"{admin}/metrics") as r:
            text = await r.text()
        assert "gateway_frames_in_total" in text and "gateway_reply_latency_seconds_bucket" in text
        async with http.get(f"{admin}/openapi.json") as r:
            assert "/calls/{uuid}/hangup" in (await r.json())["paths"]


@STACKS
async def test_null_model_echoes_caller_audio_bit_exact_through_g711(make_gateway):
    gw = await make_gateway(model_backend="null-echo")
    rng = np.random.default_rng(7)
    caller = (rng.standard_normal(8000) * 3000).astype(np.int16)  # 1 s
    s = await place_call(url(gw), caller, rate=8000, metadata=meta(), token="abc", wait_for_greeting=False,
                         reply_timeout=2.0, quiet_s=0.3, max_duration=3.0)
    from gateway.audio import g711
    expected = g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(caller))
    assert expected in s.reply_pcm  # what the caller said came back through u-law, sample for sample
