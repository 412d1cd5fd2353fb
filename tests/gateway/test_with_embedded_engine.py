"""The whole offline pipeline: `gateway serve` in front of the embedded engine (`gateway model`, a real
separate process), a spoken question in, the profile's answer out, as `make demo` runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid as uuidlib

import pytest

from gateway.client.call import place_call

pytest.importorskip("gateway.engine.server")


@pytest.fixture(scope="module")
def engine_url(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gateway", "model", "--host", "127.0.0.1", "--port", str(port)]
    # The engine logs every turn: to a file, since an unread pipe would fill and stall it.
    log_path = tmp_path_factory.mktemp("engine") / "engine.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gateway model exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("gateway model did not listen")
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_spoken_question_gets_the_profiles_answer(make_gateway, engine_url, question_wav, rate):
    gw = await make_gateway(model_url=engine_url)
    s = await place_call(f"ws://127.0.0.1:{gw.media_port}/stream/{uuidlib.uuid4()}", question_wav, rate=rate,
                         metadata={"rate": rate, "profile": "front-desk", "caller": "+15550111"}, token="abc")
    assert s.errors == []
    agent = [t["text"] for t in s.transcripts if t["role"] == "agent"]
    assert agent[0].startswith("Thank you for calling Riverside Dental")
    assert any("Monday to Friday" in text for text in agent[1:])
    assert s.greeting_s > 2.0 and s.reply_s > s.greeting_s + 2.0
    assert s.first_reply_latency_ms is not None


async def test_twilio_media_streams_call_converses_and_hangs_up_via_rest(make_gateway, engine_url,
                                                                       question_wav):
    """Twilio's side byte for byte: greeting, the answer in 8 kHz mu-law with marks echoed, DTMF, then an
    admin hang-up that reaches Twilio's REST API (a local fake) as Status=completed."""
    import asyncio
    import secrets

    import aiohttp
    from fakes.twilio_rest import FakeTwilioRest

    from gateway.client.twilio_call import place_twilio_call

    token, account, host = secrets.token_hex(16), "AC" + "cd" * 16, "127.0.0.43"
    rest = await FakeTwilioRest(account, token, host=host).start()
    try:
        gw = await make_gateway(model_url=engine_url, media_host=host, admin_host=host,
                                twilio_auth_token=token, twilio_account_sid=account,
                                twilio_api_base_url=rest.base_url)
        s = await place_twilio_call(f"ws://{host}:{gw.media_port}/twilio/stream", question_wav,
                                    auth_token=token, dtmf="1", reply_timeout=20, greeting_timeout=30)
        assert s.errors == [], s
        assert s.greeting_s > 2.0 and s.reply_s > 2.0 and s.first_reply_latency_ms is not None
        assert s.marks_sent_back >= 2  # after the greeting and after the answer
        async with aiohttp.ClientSession() as http:  # the first call leaves the list (its teardown may
            for _ in range(100):                     # end just after the caller's TCP is dropped)
                async with http.get(f"http://{host}:{gw.admin_port}/calls") as r:
                    if not await r.json():
                        break
                await asyncio.sleep(0.05)
        # A second call, hung up by the operator: the gateway asks Twilio to complete it.
        call = asyncio.create_task(place_twilio_call(f"ws://{host}:{gw.media_port}/twilio/stream",
                                                     question_wav, auth_token=token, greeting_timeout=30))
        async with aiohttp.ClientSession() as http:
            for _ in range(400):
                async with http.get(f"http://{host}:{gw.admin_port}/calls") as r:
                    live = await r.json()
                if live and live[0]["call_control"]:
                    break
                await asyncio.sleep(0.05)
            async with http.post(f"http://{host}:{gw.admin_port}/calls/{live[0]['uuid']}/hangup") as r:
                assert r.status == 200
        await asyncio.wait_for(call, 30)
        assert {"Status": "completed"} in rest.calls_updates()
    finally:
        await rest.close()
