"""Every call leaves a record: a real `gateway serve` (in-process) with a store, a Realtime-protocol fake
as the model, calls placed exactly as mod_audio_stream places them."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import logging
import re
import uuid as uuidlib
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gw_helpers import tone
from rec_helpers import GW_HOST, TOKEN, profiles_dir

from gateway.client.call import place_call
from gateway.records.store import RecordFilter, open_store

CALLER = "+14155550111"
SAID = "Hi, my name is Maria Lopez, call me back at 415-555-0132 about my appointment"


def url(gw: Any, call_uuid: str | None = None) -> str:
    return f"ws://{GW_HOST}:{gw.media_port}/stream/{call_uuid or uuidlib.uuid4()}"


def meta(caller: str = CALLER, **kw: Any) -> dict[str, Any]:
    return {
        "caller": caller,
        "callee": "+15550100",
        "call_id": "CA" + "2" * 32,
        "worker": "fs1",
        "profile": "front-desk",
        "rate": 8000,
    } | kw


def speech() -> Any:
    return tone(0.8, 8000, lead_silence=1.4, tail_silence=0.6)  # after the greeting, then quiet


async def call(gw: Any, call_uuid: str, caller: str = CALLER, **kw: Any) -> Any:
    return await place_call(
        url(gw, call_uuid),
        speech(),
        rate=8000,
        metadata=meta(caller, **kw),
        token=TOKEN,
        wait_for_greeting=False,
        reply_timeout=10,
        quiet_s=0.8,
    )


async def test_a_call_is_recorded_as_it_happens_with_turns_outcome_and_analysis(
    store_url, records_gateway, realtime_fake, tmp_path
):
    model = await realtime_fake(greeting_ms=600, reply_ms=600, speed=6.0, caller_transcript=SAID)
    gw = await records_gateway(model_url=model.url, records_url=store_url)
    call_uuid = str(uuidlib.uuid4())
    placed = asyncio.create_task(call(gw, call_uuid))
    # While the call is live, the call row and what was said are already in the store.
    seen_live = None
    for _ in range(200):
        rec = await gw.records.get_record(call_uuid)
        if rec and any(t["role"] == "caller" for t in rec["turns"]) and not placed.done():
            seen_live = rec
            break
        await asyncio.sleep(0.05)
    assert seen_live is not None and seen_live["outcome"] is None
    summary = await placed
    assert summary.errors == []
    for _ in range(100):
        rec = await gw.records.get_record(call_uuid)
        if rec["analysis"] is not None:
            break
        await asyncio.sleep(0.05)
    assert rec["outcome"] == "caller_hangup" and rec["duration_s"] > 1.0
    assert rec["profile"] == "front-desk" and rec["sip_call_id"] == "CA" + "2" * 32
    assert rec["caller"] == "[PHONE ***0111]"  # the number itself is not stored
    roles = [t["role"] for t in rec["turns"]]
    assert roles[:3] == ["agent", "caller", "agent"], rec["turns"]
    greeting, said, reply = rec["turns"][:3]
    assert greeting["text"] == "Thank you for calling." and greeting["start_ms"] is not None
    assert greeting["end_ms"] - greeting["start_ms"] == pytest.approx(600, abs=1)  # the greeting's audio
    assert said["text"] == (
        "Hi, my name is Maria Lopez, call me back at [PHONE ***0132] about my appointment"
    )
    assert said["start_ms"] < said["end_ms"]
    assert reply["latency_ms"] is not None and reply["latency_ms"] > 0
    a = rec["analysis"]
    assert a["intent"] == "appointment" and a["slots"]["name"] == "Maria Lopez"
    assert a["slots"]["callback_number"] == "[PHONE ***0132]"
    assert a["reply_latency_ms"]["n"] == 1 and a["reply_latency_ms"]["p50"] == reply["latency_ms"]
    assert a["usage"]["caller_audio_s"] > 2.0 and a["usage"]["agent_audio_s"] == pytest.approx(1.2, abs=0.1)
    assert "415-555-0132" not in json.dumps(rec)


async def test_openai_session_config_asks_for_caller_transcription(records_gateway, realtime_fake):
    """The fake validates every client event against the SDK's GA models."""
    model = await realtime_fake(greeting_ms=200, reply_ms=200, speed=10.0)
    gw = await records_gateway(model_url=model.url)
    await place_call(url(gw), tone(0.2, 8000), rate=8000, metadata=meta(), token=TOKEN, reply_timeout=3)
    (session,) = model.sessions
    assert session.invalid_client_events == []
    (update,) = session.of_type("session.update")
    assert update["session"]["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}


async def test_memory_of_a_caller_is_carried_into_their_next_call(records_gateway, realtime_fake, tmp_path):
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
    pdir = profiles_dir(tmp_path, memory={"mode": "on", "turns": 4})
    gw = await records_gateway(
        model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db", profiles_dir=pdir
    )
    await call(gw, str(uuidlib.uuid4()))
    for _ in range(100):
        if await gw.records.get_memory(CALLER):
            break
        await asyncio.sleep(0.05)
    # The same caller, written differently by another carrier, and a stranger.
    await call(gw, str(uuidlib.uuid4()), caller="sip:+1 (415) 555-0111@carrier.example")
    await call(gw, str(uuidlib.uuid4()), caller="+14155550999")
    first, second, stranger = (
        s.of_type("session.update")[0]["session"]["instructions"] for s in model.sessions
    )
    assert "earlier call" not in first
    assert "earlier call" in second and "\nCaller name: Maria Lopez\n" in second
    assert "[PHONE ***0132]" in second and "415-555-0132" not in second  # memory holds redacted words only
    assert "earlier call" not in stranger


async def _analysis(gw: Any, call_uuid: str) -> dict[str, Any]:
    for _ in range(200):
        rec = await gw.records.get_record(call_uuid)
        if rec and rec["analysis"] is not None:
            return rec["analysis"]
        await asyncio.sleep(0.05)
    raise AssertionError("no post-call record")


async def test_with_openai_the_summary_comes_from_an_out_of_band_response(
    records_gateway, realtime_fake, tmp_path
):
    written = "Maria Lopez called about her appointment; call her back at 415-555-0132."
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID,
                                oob_text=written)
    gw = await records_gateway(model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db",
                               records_model_summary=True)
    call_uuid = str(uuidlib.uuid4())
    summary = await call(gw, call_uuid)
    assert summary.errors == []
    (session,) = model.sessions
    assert session.invalid_client_events == []
    (ask,) = [e for e in session.of_type("response.create") if e["response"].get("conversation") == "none"]
    assert ask["response"]["output_modalities"] == ["text"]
    assert ask["response"]["metadata"] == {"purpose": "post_call_summary"}
    assert "summary" in ask["response"]["instructions"]
    # Asked for before the session closed: the fake answered on the same socket.
    assert session.sent_types[-1] == "response.done"
    a = await _analysis(gw, call_uuid)
    assert a["analysed_by"] == "model"
    assert a["summary"] == "Maria Lopez called about her appointment; call her back at [PHONE ***0132]."
    assert a["extractive_summary"].startswith("Caller Maria Lopez (appointment)")
    assert a["usage"]["tokens"]["output_tokens"] >= 20  # the summary's tokens are counted too
    # The caller heard nothing of it: no audio after the summary request.
    assert summary.transcripts[-1]["text"] != written


async def test_a_model_that_does_not_answer_leaves_the_extractive_summary(
    records_gateway, realtime_fake, tmp_path
):
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID,
                                oob_text=None)
    gw = await records_gateway(model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db",
                               records_model_summary=True, records_summary_timeout_s=0.5)
    call_uuid = str(uuidlib.uuid4())
    assert (await call(gw, call_uuid)).errors == []
    a = await _analysis(gw, call_uuid)
    assert a["analysed_by"] == "extractive" and a["summary"].startswith("Caller Maria Lopez (appointment)")


async def test_the_engine_path_asks_for_no_model_summary_by_default(records_gateway, realtime_fake, tmp_path):
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
    gw = await records_gateway(model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db")
    call_uuid = str(uuidlib.uuid4())
    assert (await call(gw, call_uuid)).errors == []
    (session,) = model.sessions
    assert all(e["response"].get("conversation") != "none" for e in session.of_type("response.create"))
    assert (await _analysis(gw, call_uuid))["analysed_by"] == "extractive"


async def test_twilio_conversation_sid_keys_the_callers_memory(records_gateway, realtime_fake, tmp_path):
    """Two Twilio calls from different numbers in one Twilio Conversation share memory; a third call from
    the first number in another Conversation does not get it."""
    import secrets

    from gateway.client.twilio_call import place_twilio_call

    token, account = secrets.token_hex(16), "AC" + "ef" * 16
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
    pdir = profiles_dir(tmp_path, memory={"mode": "on", "turns": 4})
    gw = await records_gateway(model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db",
                               profiles_dir=pdir, twilio_auth_token=token, twilio_account_sid=account,
                               twilio_api_base_url="http://127.0.0.221:9")  # no REST call is made
    conv, other = "CH" + "a1" * 16, "CH" + "b2" * 16

    async def twilio_call(caller: str, conversation: str) -> Any:
        return await place_twilio_call(f"ws://{GW_HOST}:{gw.media_port}/twilio/stream", speech(),
                                       auth_token=token, caller=caller, profile="front-desk",
                                       parameters={"ConversationSid": conversation},
                                       wait_for_greeting=False, reply_timeout=10)

    assert (await twilio_call("+14155550111", conv)).errors == []
    for _ in range(100):
        if await gw.records.get_memory(conv):
            break
        await asyncio.sleep(0.05)
    assert await gw.records.get_memory(conv) and not await gw.records.get_memory("+14155550111")
    await twilio_call("+14155550222", conv)
    await twilio_call("+14155550111", other)
    first, same_conversation, other_conversation = (
        s.of_type("session.update")[0]["session"]["instructions"] for s in model.sessions
    )
    assert "earlier call" not in first
    assert "earlier call" in same_conversation and "Caller name: Maria Lopez" in same_conversation
    assert "earlier call" not in other_conversation


async def test_turns_are_posted_to_the_twilio_conversation_when_turned_on(
    records_gateway, realtime_fake, tmp_path
):
    """The official SDK against a local Twilio REST fake: each turn, redacted, becomes a Message of the
    call's Conversation, in the order said."""
    import secrets
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent))
    from fakes.twilio_rest import FakeTwilioRest

    from gateway.client.twilio_call import place_twilio_call

    token, account = secrets.token_hex(16), "AC" + "cd" * 16
    rest = await FakeTwilioRest(account, token, host="127.0.0.221").start()
    try:
        model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
        gw = await records_gateway(model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db",
                                   twilio_auth_token=token, twilio_account_sid=account,
                                   twilio_api_base_url=rest.base_url, records_twilio_conversations=True)
        conv = "CH" + "c3" * 16
        s = await place_twilio_call(f"ws://{GW_HOST}:{gw.media_port}/twilio/stream", speech(),
                                    auth_token=token, profile="front-desk",
                                    parameters={"ConversationSid": conv}, wait_for_greeting=False,
                                    reply_timeout=10)
        assert s.errors == []
        for _ in range(200):
            if len(rest.messages(conv)) >= 3:
                break
            await asyncio.sleep(0.05)
        posted = [(m["Author"], m["Body"]) for m in rest.messages(conv)]
        assert posted[:3] == [
            ("agent", "Thank you for calling."),
            ("caller", "Hi, my name is Maria Lopez, call me back at [PHONE ***0132] about my appointment"),
            ("agent", "We are open Monday to Friday."),
        ]
        # A call without a Conversation posts nothing.
        await place_twilio_call(f"ws://{GW_HOST}:{gw.media_port}/twilio/stream", speech(),
                                auth_token=token, profile="front-desk", wait_for_greeting=False,
                                reply_timeout=10)
        assert len([r for r in rest.requests if "/Conversations/" in r.path]) == len(posted)
    finally:
        await rest.close()


async def test_admin_api_lists_reads_exports_and_erases_records(records_gateway, realtime_fake, tmp_path):
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
    pdir = profiles_dir(tmp_path, memory={"mode": "on"})
    gw = await records_gateway(
        model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db", profiles_dir=pdir
    )
    ids = [str(uuidlib.uuid4()) for _ in range(3)]
    await call(gw, ids[0])
    await call(gw, ids[1])
    await call(gw, ids[2], caller="+14155550999")
    await gw.records.writer.flush()
    for _ in range(100):
        if await gw.records.get_memory(CALLER):
            break
        await asyncio.sleep(0.05)
    admin = f"http://{GW_HOST}:{gw.admin_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{admin}/records", params={"caller": CALLER, "limit": "1"}) as r:
            page = await r.json()
        assert r.status == 200 and [x["call_id"] for x in page["records"]] == [ids[1]]
        async with http.get(admin + page["next"]) as r:
            assert [x["call_id"] for x in (await r.json())["records"]] == [ids[0]]
        async with http.get(f"{admin}/records/{ids[2]}") as r:
            rec = await r.json()
        assert r.status == 200 and rec["turns"] and rec["caller"] == "[PHONE ***0999]"
        async with http.get(f"{admin}/records/{uuidlib.uuid4()}") as r:
            assert r.status == 404
        async with http.get(f"{admin}/records/export", params={"format": "csv"}) as r:
            rows = list(csv.DictReader(io.StringIO(await r.text())))
        assert r.headers["Content-Type"].startswith("text/csv") and {x["call_id"] for x in rows} == set(ids)
        assert all("0132" not in x["summary"] or "[PHONE ***0132]" in x["summary"] for x in rows)
        async with http.get(f"{admin}/records/export", params={"outcome": "caller_hangup"}) as r:
            assert len(await r.json()) == 3
        async with http.get(f"{admin}/callers/{CALLER}/memory") as r:
            mem = await r.json()
        assert r.status == 200 and mem["calls"] == 2 and "Maria Lopez" in mem["summary"]
        async with http.delete(f"{admin}/callers/{CALLER}", headers={"X-Operator": "dpo"}) as r:
            erased = await r.json()
        assert r.status == 200 and erased["erased"]["calls"] == 2 and erased["erased"]["memory"] == 1
        async with http.get(f"{admin}/callers/{CALLER}/memory") as r:
            assert r.status == 404
        async with http.get(f"{admin}/records", params={"caller": CALLER}) as r:
            assert (await r.json())["records"] == []
        async with http.get(f"{admin}/records") as r:
            assert [x["call_id"] for x in (await r.json())["records"]] == [ids[2]]  # others untouched
        async with http.get(f"{admin}/records-audit") as r:
            (entry,) = await r.json()
        assert entry["action"] == "erase" and entry["actor"] == "admin-api:dpo"


async def test_retention_job_deletes_what_is_older_than_the_profile_keeps(
    records_gateway, realtime_fake, tmp_path
):
    model = await realtime_fake(greeting_ms=200, reply_ms=200, speed=10.0)
    pdir = profiles_dir(tmp_path, retention_days=30, memory={"mode": "on"})
    db = f"sqlite:///{tmp_path}/r.db"
    gw = await records_gateway(model_url=model.url, records_url=db, profiles_dir=pdir)
    call_uuid = str(uuidlib.uuid4())
    await call(gw, call_uuid)
    await asyncio.sleep(0.3)
    await gw.records.writer.flush()
    now = gw.records.clock()
    assert (await gw.records.run_retention(now=now + 29 * 86400))["front-desk"]["calls"] == 0
    deleted = await gw.records.run_retention(now=now + 31 * 86400)
    assert deleted["front-desk"]["calls"] == 1 and deleted["front-desk"]["memory"] == 1
    assert await gw.records.get_record(call_uuid) is None


# ---------------------------------------------------------------- redaction, one test per sink
async def test_redaction_sink_logs(records_gateway, realtime_fake, caplog):
    model = await realtime_fake(greeting_ms=200, reply_ms=200, speed=10.0, caller_transcript=SAID)
    gw = await records_gateway(model_url=model.url)
    with caplog.at_level(logging.INFO, logger="gateway.call"):
        await call(gw, str(uuidlib.uuid4()))
    said = [r for r in caplog.records if r.getMessage() == "caller said"]
    assert said, "no caller transcript logged"
    logged = json.dumps(
        [
            {k: getattr(v, "value", v) for k, v in r.fields.items()}
            for r in caplog.records
            if hasattr(r, "fields")
        ],
        default=str,
    )
    assert "415-555-0132" not in logged and "[PHONE ***0132]" in logged
    assert CALLER not in logged  # the caller number field too


async def test_redaction_sink_admin_api_live_call(records_gateway, realtime_fake):
    model = await realtime_fake(greeting_ms=5000, speed=1.0)
    gw = await records_gateway(model_url=model.url)
    call_uuid = str(uuidlib.uuid4())
    placed = asyncio.create_task(
        place_call(
            url(gw, call_uuid),
            tone(0.1, 8000),
            rate=8000,
            metadata=meta(),
            token=TOKEN,
            greeting_timeout=10,
            reply_timeout=10,
        )
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(f"http://{GW_HOST}:{gw.admin_port}/calls/{call_uuid}") as r:
                if r.status == 200:
                    info = await r.json()
                    break
            await asyncio.sleep(0.05)
    await gw.registry.get(call_uuid).hangup("test")
    await placed
    assert info["caller"] == "[PHONE ***0111]" and info["callee"] == "[PHONE ***0100]"


async def test_redaction_sink_webhook_is_signed_and_redacted(records_gateway, realtime_fake, tmp_path):
    got: list[tuple[dict[str, str], bytes]] = []
    attempts = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return web.Response(status=503)  # the first delivery fails: the sender retries
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.163", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        model = await realtime_fake(greeting_ms=200, reply_ms=200, speed=10.0, caller_transcript=SAID)
        gw = await records_gateway(
            model_url=model.url,
            records_url=f"sqlite:///{tmp_path}/r.db",
            records_webhook_url=f"http://127.0.0.163:{port}/hook",
            records_webhook_secret="whsec-test",
        )
        call_uuid = str(uuidlib.uuid4())
        await call(gw, call_uuid)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    ((headers, body),) = got
    ts = headers["X-Gateway-Timestamp"]
    expected = "v1=" + hmac.new(b"whsec-test", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Gateway-Signature"], expected)
    record = json.loads(body)
    assert record["call_id"] == call_uuid and record["slots"]["name"] == "Maria Lopez"
    assert b"415-555-0132" not in body and b"[PHONE ***0132]" in body
    stored = await gw.records.get_record(call_uuid)
    assert stored["analysis"]["summary"] == record["summary"]  # kept in the store too


async def test_redaction_sink_sip_headers_of_an_escalation(records_gateway, realtime_fake):
    from fakes.freeswitch_esl import FakeFreeSwitch

    fs = FakeFreeSwitch(password="records-esl-secret")
    await fs.start()
    try:
        model = await realtime_fake(
            greeting_ms=200,
            reply_ms=300,
            speed=10.0,
            caller_transcript=SAID,
            tool={
                "name": "escalate",
                "arguments": {"reason": "caller 415-555-0132 wants a person", "urgency": "normal"},
            },
        )
        gw = await records_gateway(model_url=model.url, esl_workers={"fs1": fs.address})
        call_uuid = str(uuidlib.uuid4())
        fs.add_channel(call_uuid)
        await call(gw, call_uuid)
        await fs.wait_for_command(f"api uuid_transfer {call_uuid}", timeout=15)
        header = fs.channel_vars[call_uuid]["sip_h_X-AI-Summary"]
        reason = fs.channel_vars[call_uuid]["sip_h_X-AI-Reason"]
    finally:
        await fs.close()
    assert reason == "caller [PHONE ***0132] wants a person"
    assert "Maria Lopez" in header and "0132" in header
    assert "415-555-0132" not in header and "415" not in header.replace("***0132", "")


async def test_redaction_sink_store_with_a_stricter_policy(records_gateway, realtime_fake, tmp_path):
    model = await realtime_fake(greeting_ms=200, reply_ms=200, speed=10.0, caller_transcript=SAID)
    pdir = profiles_dir(tmp_path, redaction={"keep_last4": []})
    gw = await records_gateway(
        model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db", profiles_dir=pdir
    )
    call_uuid = str(uuidlib.uuid4())
    await call(gw, call_uuid)
    await gw.records.writer.flush()
    await gw.shutdown(drain_timeout=0.5)
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    (row,) = store.list_records(RecordFilter())
    dump = json.dumps(store.get_record(call_uuid))
    # Whole digit groups only: generated item ids ("item_001324") may contain the same four digits.
    assert row["caller"] == "[PHONE]" and "[PHONE]" in dump
    assert not re.search(r"\b(0132|0111)\b", dump), dump
