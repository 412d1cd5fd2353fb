"""Against a real FreeSWITCH running freeswitch-conf/: the build on this machine started by the test
(tests/conftest.py), or an external one named by FREESWITCH_ESL=host:port:password.

These prove what the static tests cannot: FreeSWITCH itself accepted the tree, loaded the intended
modules, started the Kamailio profile, and a call entering from-kamailio reaches uuid_audio_stream.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib

import pytest

from gateway.esl.client import EslClient, parse_address
from gateway.esl.errors import EslCommandError
from gateway.esl.protocol import Event

pytestmark = pytest.mark.freeswitch

MODULES = ["mod_event_socket", "mod_sofia", "mod_loopback", "mod_commands", "mod_conference", "mod_dptools",
           "mod_dialplan_xml", "mod_sndfile", "mod_native_file", "mod_tone_stream", "mod_audio_stream",
           "mod_curl", "mod_lua"]


@pytest.fixture
async def live_esl(freeswitch_esl: str):
    host, port, password = parse_address(freeswitch_esl)
    client = EslClient(host, port, password, reconnect=False,
                       events=("CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"),
                       custom=("mod_audio_stream::connect", "mod_audio_stream::error"))
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def test_tree_reloads_without_error(live_esl: EslClient) -> None:
    assert (await live_esl.api("reloadxml")).strip() == "+OK [Success]"


@pytest.mark.parametrize("module", MODULES)
async def test_intended_module_is_loaded(live_esl: EslClient, module: str) -> None:
    assert (await live_esl.api(f"module_exists {module}")).strip() == "true"


async def test_kamailio_profile_is_running(live_esl: EslClient) -> None:
    # 1.10.12 prints no state in `sofia status profile NAME`; the summary `sofia status` has the
    # profile's line: "kamailio  profile  sip:mod_sofia@IP:PORT  RUNNING (0)".
    lines = [line.split() for line in (await live_esl.api("sofia status")).splitlines()]
    profile = [f for f in lines if f[:2] == ["kamailio", "profile"]]
    assert profile and profile[0][3] == "RUNNING", lines
    assert "kamailio-edge" in await live_esl.api("sofia status gateway kamailio-edge")


async def test_worker_id_and_conference_profile_are_configured(live_esl: EslClient) -> None:
    assert (await live_esl.api("global_getvar worker_id")).strip()
    with pytest.raises(EslCommandError):
        await live_esl.api("conference ai-no-such-room list")  # -ERR Conference ... not found: module up


async def test_loopback_call_reaches_the_stream_start(live_esl: EslClient) -> None:
    seen: asyncio.Queue[Event] = asyncio.Queue()
    live_esl.subscribe(seen.put_nowait)
    a_leg = str(uuidlib.uuid4())
    # The B leg of the loopback enters from-kamailio as a call to 1000 would. With a gateway listening
    # its stream connects; without one (the harness's default URL) the readiness question fails and
    # the leg is refused before answer with NORMAL_TEMPORARY_FAILURE (SIP 503: the edge fails over).
    try:
        await live_esl.bgapi(f"originate {{origination_uuid={a_leg}}}loopback/1000/from-kamailio &park()")
    except EslCommandError as exc:
        assert "NORMAL_TEMPORARY_FAILURE" in str(exc)
    answered: set[str] = set()
    try:
        async with asyncio.timeout(15):
            while True:
                event = await seen.get()
                # The dialled number is kept in ai_callee (Caller-Destination-Number is
                # "ai-stream-check" once the call reaches that step).
                if event.get("variable_ai_callee") != "1000":
                    continue
                if event.name == "CHANNEL_ANSWER":
                    answered.add(event.unique_id or "")
                if event.subclass == "mod_audio_stream::connect" or event.name == "CHANNEL_HANGUP_COMPLETE":
                    break
        assert event.get("variable_STREAM_HEART_BEAT")
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            assert event.get("Hangup-Cause") == "NORMAL_TEMPORARY_FAILURE"
            assert (event.get("variable_ai_stream_result") or "").startswith("-ERR")
            assert event.unique_id not in answered, "a call without a stream was answered"
    finally:
        try:
            await live_esl.api(f"uuid_kill {a_leg}")
        except EslCommandError:
            pass
