"""The Twilio REST client as the gateway uses it (gateway/twilio_rest.py): a Twilio API that stops answering
fails the verb in bounded time (the SDK's async client alone would wait forever), and the calls of one
process share one pooled client per account, closed when the gateway stops."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from fakes.twilio_rest import FakeTwilioRest

from gateway import twilio_rest
from gateway.call.control import CallControlError, ErrorKind
from gateway.call.twilio_control import TwilioControl

HOST = "127.0.0.243"  # this file's own address
TOKEN = secrets.token_hex(16)
ACCOUNT = "AC" + "ef" * 16


async def test_a_twilio_api_that_never_answers_fails_the_verb_in_bounded_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_rest, "REST_TIMEOUT_S", 0.5)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing back, answers nothing: a hung API

    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        control = TwilioControl("CA" + "01" * 16, account_sid=ACCOUNT, auth_token=TOKEN,
                                base_url=f"http://{HOST}:{port}")
        started = time.monotonic()
        with pytest.raises(CallControlError) as failed:
            async with asyncio.timeout(10):  # the test's own bound: without the fix this is what fires
                await control.hangup()
        assert failed.value.kind is ErrorKind.UNREACHABLE
        assert time.monotonic() - started < 5
        assert accepted, "the request reached the API"
    finally:
        await twilio_rest.close_shared()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_calls_share_one_client_per_account_and_stopping_closes_it() -> None:
    fake = await FakeTwilioRest(ACCOUNT, TOKEN, host=HOST).start()
    try:
        first, second = (TwilioControl("CA" + n * 16, account_sid=ACCOUNT, auth_token=TOKEN,
                                        base_url=fake.base_url) for n in ("02", "03"))
        other = TwilioControl("CA" + "04" * 16, account_sid="AC" + "99" * 16, auth_token=TOKEN,
                              base_url=fake.base_url)
        assert first.rest is second.rest  # one pooled session for the account's calls
        assert other.rest is not first.rest  # never another account's credentials
        session = first.rest.http_client.session
        assert session is not None and not session.closed
        await twilio_rest.close_shared()
        assert session.closed
        third = TwilioControl("CA" + "05" * 16, account_sid=ACCOUNT, auth_token=TOKEN, base_url=fake.base_url)
        assert third.rest is not first.rest  # a new one after the stop, not a closed one
    finally:
        await twilio_rest.close_shared()
        await fake.close()
