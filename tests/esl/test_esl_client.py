"""The asyncio ESL client against a loopback FreeSWITCH that replays captured bytes."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fakes.freeswitch_esl import FakeFreeSwitch

from gateway.esl import commands
from gateway.esl.client import EslClient, parse_address
from gateway.esl.errors import EslAuthError, EslCommandError, EslConnectionError, EslTimeout
from gateway.esl.protocol import Event

CALL = "6cb13cce-643b-4f1c-ae2c-d0fa60be795a"
OTHER = "031d4ed3-e244-4798-9310-9d2f31cab2c2"


async def test_authenticates_and_subscribes_to_channel_and_audio_stream_events(
    fake_fs: FakeFreeSwitch, esl: EslClient
) -> None:
    assert esl.connected
    assert fake_fs.auth_attempts == ["ClueCon"]
    (subscription,) = [c for c in fake_fs.commands if c.startswith("event ")]
    assert subscription.startswith("event json CHANNEL_ANSWER ")
    assert " BACKGROUND_JOB " in subscription and " DTMF " in subscription
    assert subscription.endswith(
        "CUSTOM mod_audio_stream::connect mod_audio_stream::disconnect mod_audio_stream::error "
        "mod_audio_stream::json mod_audio_stream::play conference::maintenance"
    )


async def test_wrong_password_raises_auth_error(fake_fs: FakeFreeSwitch) -> None:
    client = EslClient(fake_fs.host, fake_fs.port, "WrongPassword", reconnect=False)
    with pytest.raises(EslAuthError, match="-ERR invalid"):
        await client.connect()
    assert not client.connected
    await client.close()


async def test_connection_refused_raises_connection_error() -> None:
    fs = await FakeFreeSwitch().start()
    port = fs.port
    await fs.close()
    client = EslClient("127.0.0.1", port, "ClueCon", reconnect=False, connect_timeout=2)
    with pytest.raises(EslConnectionError):
        await client.connect()


async def test_api_returns_the_body_show_calls_count(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    assert await esl.api("show calls count") == "\n0 total.\n"
    fake_fs.calls = 2
    body = await esl.api(commands.show_calls_count())
    assert commands.parse_calls_count(body) == 2


async def test_api_error_reply_raises_with_freeswitch_text(esl: EslClient) -> None:
    with pytest.raises(EslCommandError) as info:
        await esl.api("uuid_kill 00000000-0000-4000-8000-000000000000")
    assert info.value.reply == "-ERR No such channel!"
    assert info.value.reason == "No such channel!"
    assert info.value.command == "uuid_kill 00000000-0000-4000-8000-000000000000"


async def test_usage_reply_raises(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    fake_fs.on_api("uuid_audio_stream", "-USAGE: <uuid> [start | stop ] ...\n")
    with pytest.raises(EslCommandError, match="-USAGE"):
        await esl.api(f"uuid_audio_stream {CALL}")


async def test_concurrent_api_calls_get_their_own_replies(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    for i in range(20):
        fake_fs.on_api(f"echo {i} ", f"reply {i}\n")
    results = await asyncio.gather(*(esl.api(f"echo {i} x") for i in range(20)))
    assert results == [f"reply {i}\n" for i in range(20)]


async def test_bgapi_result_is_matched_by_job_uuid(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    fake_fs.calls = 7
    fake_fs.bgapi_delay = 0.05
    first, second = await asyncio.gather(esl.bgapi("show calls count"), esl.bgapi("status"))
    assert first == "\n7 total.\n"
    assert second.startswith("UP 0 years")
    # Our own Job-UUID went out in the bgapi header, one per job.
    job_ids = [
        h["Job-UUID"]
        for c, h in zip(fake_fs.commands, fake_fs.command_headers, strict=True)
        if c.startswith("bgapi ")
    ]
    assert len(set(job_ids)) == 2


async def test_bgapi_error_result_raises(esl: EslClient) -> None:
    with pytest.raises(EslCommandError, match="No such channel"):
        await esl.bgapi("uuid_kill 00000000-0000-4000-8000-000000000000")


async def test_bgapi_works_with_uuid_filters_on(fake_fs: FakeFreeSwitch) -> None:
    client = EslClient(fake_fs.host, fake_fs.port, "ClueCon", filter_by_uuid=True, bgapi_timeout=3)
    await client.connect()
    try:
        assert "filter Event-Name BACKGROUND_JOB" in fake_fs.commands
        client.subscribe(lambda e: None, CALL)
        await fake_fs.wait_for_command(f"filter Unique-ID {CALL}")
        assert (await client.bgapi("show calls count")) == "\n0 total.\n"
    finally:
        await client.close()


async def test_events_fan_out_by_unique_id(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    mine: list[Event] = []
    theirs: list[Event] = []
    everything: list[Event] = []
    esl.subscribe(mine.append, CALL)
    esl.subscribe(theirs.append, OTHER)
    esl.subscribe(everything.append)
    await fake_fs.emit(CALL, "CHANNEL_ANSWER")
    await fake_fs.emit(OTHER, "DTMF", headers={"DTMF-Digit": "5", "DTMF-Duration": "1600"})
    await fake_fs.emit(
        CALL,
        "CUSTOM",
        subclass="mod_audio_stream::play",
        body='{"audioDataType":"raw","sampleRate":8000,"file":"/tmp/x_1.tmp.r8"}',
    )
    await _until(lambda: len(everything) == 3)
    assert [e.name for e in mine] == ["CHANNEL_ANSWER", "CUSTOM"]
    assert mine[1].subclass == "mod_audio_stream::play"
    assert mine[1].json_body()["file"] == "/tmp/x_1.tmp.r8"
    assert [(e.name, e.get("DTMF-Digit")) for e in theirs] == [("DTMF", "5")]


async def test_unsubscribed_handler_gets_nothing_more(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    seen: list[Event] = []
    sub = esl.subscribe(seen.append, CALL)
    await fake_fs.emit(CALL, "CHANNEL_ANSWER")
    await _until(lambda: len(seen) == 1)
    sub.cancel()
    await fake_fs.emit(CALL, "CHANNEL_HANGUP")
    await esl.api("status")  # a round trip later, the event has surely been routed
    assert len(seen) == 1


async def test_plain_event_format_delivers_the_same_events(fake_fs: FakeFreeSwitch) -> None:
    client = EslClient(fake_fs.host, fake_fs.port, "ClueCon", event_format="plain")
    await client.connect()
    try:
        seen: list[Event] = []
        client.subscribe(seen.append, CALL)
        await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::json", body='{"type":"x","n":"a b%"}')
        await _until(lambda: len(seen) == 1)
        assert seen[0].format == "plain"
        assert seen[0].subclass == "mod_audio_stream::json"
        assert seen[0].json_body() == {"type": "x", "n": "a b%"}
        assert client.bgapi_timeout and (await client.bgapi("show calls count")) == "\n0 total.\n"
    finally:
        await client.close()


async def test_a_failing_handler_does_not_stop_delivery(
    fake_fs: FakeFreeSwitch, esl: EslClient, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    esl.subscribe(broken, CALL)
    esl.subscribe(seen.append, CALL)
    with caplog.at_level(logging.ERROR, logger="gateway.esl"):
        await fake_fs.emit(CALL, "CHANNEL_ANSWER")
        await fake_fs.emit(CALL, "CHANNEL_HANGUP")
        await _until(lambda: len(seen) == 2)
    assert "esl event handler failed" in caplog.text
    assert esl.connected


async def test_invalid_event_is_refused_and_connection_survives(
    fake_fs: FakeFreeSwitch, esl: EslClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.esl"):
        await fake_fs.emit_raw(b"Content-Length: 9\nContent-Type: text/event-json\n\n{not json")
        assert (await esl.api("show calls count")) == "\n0 total.\n"
    (record,) = [r for r in caplog.records if r.getMessage() == "esl event refused"]
    # Structured fields, the way gateway.log formats them (static message, details in fields).
    assert record.fields["content_type"] == "text/event-json" and record.fields["reason"]


async def test_garbage_bytes_drop_the_connection_and_it_comes_back(
    fake_fs: FakeFreeSwitch, esl: EslClient
) -> None:
    await fake_fs.emit_raw(b"Content-Length: banana\n\n")
    await _until(lambda: esl.connects == 2 and esl.connected)
    assert (await esl.api("show calls count")) == "\n0 total.\n"


async def test_reconnects_after_freeswitch_drops_the_socket(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    seen: list[Event] = []
    esl.subscribe(seen.append, CALL)
    await fake_fs.drop()
    await _until(lambda: esl.connects == 2 and esl.connected)
    # The subscription is re-sent on the new connection and handlers survive.
    assert sum(c.startswith("event json") for c in fake_fs.commands) == 2
    await fake_fs.emit(CALL, "CHANNEL_ANSWER")
    await _until(lambda: len(seen) == 1)


async def test_reconnect_waits_for_freeswitch_to_come_back(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    await fake_fs.stop_listening()
    await fake_fs.drop()
    await _until(lambda: not esl.connected)
    with pytest.raises(EslConnectionError):
        await esl.api("status")
    await asyncio.sleep(0.3)  # several failed attempts with backoff
    await fake_fs.restart_listening()
    await esl.wait_connected(5)
    assert (await esl.api("show calls count")) == "\n0 total.\n"


async def test_pending_commands_fail_when_the_connection_drops(
    fake_fs: FakeFreeSwitch, esl: EslClient
) -> None:
    fake_fs.bgapi_delay = 5
    job = asyncio.ensure_future(esl.bgapi("status"))
    await fake_fs.wait_for_command("bgapi status")
    await fake_fs.drop()
    with pytest.raises(EslConnectionError):
        await job


async def test_disconnect_notice_on_exit_closes_cleanly(fake_fs: FakeFreeSwitch) -> None:
    client = EslClient(fake_fs.host, fake_fs.port, "ClueCon", reconnect=False)
    await client.connect()
    from gateway.esl import protocol

    reply = await client.command(protocol.exit_())
    assert reply.reply_text == "+OK bye"
    await _until(lambda: not client.connected)
    with pytest.raises(EslConnectionError):
        await client.api("status")
    await client.close()


async def test_api_timeout(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    fake_fs.api_delay = 1.0
    with pytest.raises(EslTimeout):
        await esl.api("status", timeout=0.1)
    fake_fs.api_delay = 0
    # The late reply to the timed-out command is consumed, not handed to the next command.
    assert (await esl.api("show calls count")) == "\n0 total.\n"


async def test_bgapi_timeout(fake_fs: FakeFreeSwitch, esl: EslClient) -> None:
    fake_fs.bgapi_delay = 2
    with pytest.raises(EslTimeout, match="BACKGROUND_JOB"):
        await esl.bgapi("status", timeout=0.2)


async def test_start_connects_in_the_background() -> None:
    fs = FakeFreeSwitch()
    await fs.start()
    port = fs.port
    await fs.stop_listening()
    client = EslClient("127.0.0.1", port, "ClueCon", backoff_initial=0.05, backoff_max=0.1)
    await client.start()
    await asyncio.sleep(0.2)
    assert not client.connected
    await fs.restart_listening()
    try:
        await client.wait_connected(5)
        assert (await client.api("show calls count")) == "\n0 total.\n"
    finally:
        await client.close()
        await fs.close()


def test_parse_address() -> None:
    assert parse_address("10.0.0.5:8021:s3cr:et") == ("10.0.0.5", 8021, "s3cr:et")
    with pytest.raises(ValueError, match="no password"):  # never a silent fallback to ClueCon
        parse_address("fs1:8021")
    with pytest.raises(ValueError):
        parse_address("fs1")


async def _until(predicate, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - per-call deadline
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_refused_subscription_fails_the_connect_and_is_retried(fake_fs: FakeFreeSwitch) -> None:
    fake_fs.event_reply = "-ERR no keywords supplied"
    refused = EslClient(fake_fs.host, fake_fs.port, "ClueCon", reconnect=False)
    with pytest.raises(EslConnectionError, match="no keywords supplied"):
        await refused.connect()
    await refused.close()
    retrying = EslClient(fake_fs.host, fake_fs.port, "ClueCon", backoff_initial=0.05, backoff_max=0.1)
    await retrying.start()
    await _until(lambda: len(fake_fs.auth_attempts) >= 3)
    assert not retrying.connected
    fake_fs.event_reply = None
    try:
        await retrying.wait_connected(5)
    finally:
        await retrying.close()
