"""Issue 11, finding 1: the admin API without a token, with a wrong token and with too small a scope,
against every route, while a real call runs through the media plane; and `gateway serve` refusing to
expose an unauthenticated admin API beyond loopback.

A live call is a real `gateway serve` media stream (the null-silence model keeps it up) with call
control against the loopback FreeSWITCH that replays captured ESL bytes, so "nothing happened" is
checked where it matters: no command reached the switch and the call is still live."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid as uuidlib

import aiohttp
import numpy as np
import pytest
from fakes.freeswitch_esl import FakeFreeSwitch  # tests/ is on sys.path (see tests/fakes)
from pydantic import ValidationError

from gateway.client.call import place_call
from gateway.serve import Gateway
from gateway.settings import Settings

HOST = "127.0.0.146"  # this suite's loopback address (helper gwsec: 127.0.0.140-159)
CONTROL = "ops-2026:control:C0ntrol-secret-0123456789"
READ = "noc:read:R3ad-only-secret-0123456789"
METRICS = "prometheus:metrics:M3trics-secret-0123456789"
SECRETS = {name.split(":")[0]: name.split(":", 2)[2] for name in (CONTROL, READ, METRICS)}
STREAM_TOKEN = "stream-token-0123456789"

CONTROL_ROUTES = [("POST", "/calls/{uuid}/hangup", None),
                  ("POST", "/calls/{uuid}/transfer", {"target": "billing"}),
                  ("POST", "/calls/{uuid}/conference", {"target": "billing"})]
READ_ROUTES = [("GET", "/calls", None), ("GET", "/calls/{uuid}", None)]
ESL_EFFECTS = ("uuid_kill", "uuid_transfer", "uuid_deflect", "conference", "uuid_setvar")


@pytest.fixture
async def live_call():
    fs = await FakeFreeSwitch(password="esl-test-secret", host=HOST).start()
    gw = Gateway(Settings(media_host=HOST, media_port=0, admin_host=HOST, admin_port=0,
                          auth_tokens=STREAM_TOKEN, admin_tokens=",".join((CONTROL, READ, METRICS)),
                          model_backend="null-silence", esl_workers={"fs1": fs.address},
                          shutdown_timeout_s=1.0))
    await gw.start()
    assert gw.control_plane is not None
    await gw.control_plane.wait_connected(5)
    call_uuid = str(uuidlib.uuid4())
    fs.add_channel(call_uuid)
    call = asyncio.create_task(place_call(
        f"ws://{HOST}:{gw.media_port}/stream/{call_uuid}", np.zeros(800, np.int16), rate=8000,
        token=STREAM_TOKEN, metadata={"rate": 8000, "worker": "fs1", "profile": "front-desk"},
        wait_for_greeting=False, reply_timeout=60, max_duration=60))
    for _ in range(250):
        if call_uuid in gw.calls and gw.calls[call_uuid].control is not None:
            break
        await asyncio.sleep(0.02)
    assert call_uuid in gw.calls
    try:
        yield gw, fs, call_uuid
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        await gw.shutdown(drain_timeout=0.5)
        await fs.close()


def _effects(fs: FakeFreeSwitch) -> list[str]:
    return [c for c in fs.api_commands() if c.startswith(ESL_EFFECTS)]


async def test_strangers_and_small_scopes_are_refused_before_any_work(live_call, caplog):
    caplog.set_level(logging.INFO)
    gw, fs, call_uuid = live_call
    base = f"http://{HOST}:{gw.admin_port}"
    wrong = "Bearer " + SECRETS["ops-2026"][:-1] + "X"  # one character off
    async with aiohttp.ClientSession() as http:
        async def status(method: str, path: str, body: object, auth: str | None,
                         raw: bytes | None = None) -> int:
            headers = {"Authorization": auth} if auth else {}
            if raw is not None:
                headers["Content-Type"] = "application/json"
            async with http.request(method, base + path.format(uuid=call_uuid), json=body, data=raw,
                                    headers=headers) as r:
                if r.status == 401:
                    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
                return r.status

        for method, path, body in CONTROL_ROUTES + READ_ROUTES + [("GET", "/metrics", None)]:
            assert await status(method, path, body, None) == 401, path
            assert await status(method, path, body, wrong) == 401, path
            assert await status(method, path, body, "Basic " + SECRETS["ops-2026"]) == 401, path
        # 401 before any work: not even the body is parsed (no 422 for a stranger's junk).
        assert await status("POST", "/calls/{uuid}/transfer", None, None, raw=b"{not json") == 401
        assert await status("POST", "/calls/{uuid}/nosuchverb", None, None) == 401  # paths stay hidden
        for method, path, body in CONTROL_ROUTES:
            assert await status(method, path, body, "Bearer " + SECRETS["noc"]) == 403, path
            assert await status(method, path, body, "Bearer " + SECRETS["prometheus"]) == 403, path
        for method, path, body in READ_ROUTES:
            assert await status(method, path, body, "Bearer " + SECRETS["prometheus"]) == 403, path
            assert await status(method, path, body, "Bearer " + SECRETS["noc"]) == 200, path
        assert await status("GET", "/metrics", None, "Bearer " + SECRETS["prometheus"]) == 200
        assert await status("GET", "/healthz", None, None) == 200  # probes stay open
        assert await status("GET", "/readyz", None, None) == 200

        # Nothing reached the switch; the call is still live and unchanged.
        assert _effects(fs) == []
        assert call_uuid in gw.calls and gw.calls[call_uuid].state == "active"

        # The control token works, and every action leaves one audit line naming the holder.
        assert await status("POST", "/calls/{uuid}/transfer", {"target": "billing"},
                            "Bearer " + SECRETS["ops-2026"]) == 200
    expected = f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"
    assert await fs.wait_for_command("api uuid_transfer") == expected
    audits = [r for r in caplog.records if r.name == "gateway.audit"]
    assert len(audits) == 1
    audit = audits[0].fields  # type: ignore[attr-defined]
    assert audit["who"] == "ops-2026" and audit["action"] == "transfer" and audit["call"] == call_uuid
    assert audit["result"] == "ok"
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for secret in SECRETS.values():
        assert secret not in logged  # who, never the token


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "serve"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_serve_refuses_an_unauthenticated_admin_api_beyond_loopback():
    # Refused while reading settings, before anything listens (the address is never bound).
    done = _serve({"GATEWAY_ADMIN_HOST": "0.0.0.0", "GATEWAY_ADMIN_TOKENS": "", "GATEWAY_MEDIA_HOST": HOST,
                   "GATEWAY_MEDIA_PORT": "0", "GATEWAY_MODEL_BACKEND": "null-silence"})
    assert done.returncode == 2
    assert "invalid setting GATEWAY_ADMIN_TOKENS" in done.stderr and "0.0.0.0" in done.stderr


@pytest.mark.parametrize("host", ["::", "192.0.2.10", "gw.example"])
def test_settings_refuse_an_open_admin_api_on_any_non_loopback_host(host):
    with pytest.raises(ValidationError) as err:
        Settings(admin_host=host, admin_tokens="")
    assert err.value.errors()[0]["loc"] == ("admin_tokens",) and host in str(err.value)


@pytest.mark.parametrize("entry,why", [("ops:root:" + "s" * 20, "scope"),
                                       ("ops:control:short", "at least 16"),
                                       ("ops:control:" + "s" * 20 + ",ops:read:" + "t" * 20, "duplicate"),
                                       ("o p:read:" + "s" * 20, "expected name:scope:secret")])
def test_bad_token_entries_are_refused_without_echoing_the_secret(entry, why):
    with pytest.raises(ValidationError) as err:
        Settings(admin_tokens=entry)
    text = str(err.value)
    assert err.value.errors()[0]["loc"] == ("admin_tokens",) and why in text
    for secret in ("s" * 20, "short", "t" * 20):
        assert secret not in text
