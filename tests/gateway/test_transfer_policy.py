"""The transfer policy (gateway/call/policy.py) with the attack targets of issue 11: a number bridged out
through the edge (toll fraud), `refer:` away, `sip:` to any host, a conference `bgdial` of a listener.
From the admin API and from model tool calls alike, against the loopback FreeSWITCH that replays
captured ESL bytes: what is refused never reaches the switch."""

from __future__ import annotations

import asyncio
import json
import uuid as uuidlib

import aiohttp
import pytest
from gw_helpers import tone

from gateway.call.control import CallControlError, ErrorKind
from gateway.call.policy import TransferAllow, TransferPolicy
from gateway.client.call import place_call
from gateway.profiles import Profile
from gateway.settings import DEFAULT_PROFILES_DIR

pytest.importorskip("gateway.call.control")
from fakes.freeswitch_esl import FakeFreeSwitch  # noqa: E402 - tests/ is on sys.path (see tests/fakes)

HOST = "127.0.0.145"  # this suite's loopback address (helper gwsec: 127.0.0.140-159)

# What an attacker sends (issue 11, finding 1): numbers of the ai-transfer-number pattern
# [+0-9*#]{1,32} that the dialplan bridges out to the carrier, a REFER away, any SIP host.
ATTACK_TARGETS = ["+19005550123", "011442071234567", "*67#", "9999", "2002",
                  "refer:sip:+19005550123@evil.example", "sip:toll@evil.example",
                  "sip:+15550199@trunk.evil.example", "sips:listener@203.0.113.9"]
ESL_MOVES = ("uuid_transfer", "uuid_deflect", "conference", "uuid_setvar")  # api_commands() names


def _profile(**allow: object) -> Profile:
    return Profile(name="p", instructions="x",
                   transfer_targets={"billing": "2001", "human": "sip:+1555@trunk"},
                   transfer_allow=TransferAllow(**allow))  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ATTACK_TARGETS)
def test_default_policy_refuses_every_attack_target(target):
    policy = TransferPolicy.for_profile(_profile())
    with pytest.raises(CallControlError) as err:
        policy.check(target, action="transfer")
    assert err.value.kind is ErrorKind.FORBIDDEN


def test_named_targets_pass_and_the_allow_list_opens_only_what_it_names():
    assert TransferPolicy.for_profile(_profile()).refusal("2001") is None
    assert TransferPolicy.for_profile(_profile()).refusal("sip:+1555@trunk") is None
    policy = TransferPolicy.for_profile(_profile(numbers=[r"2[0-9]{3}"], sip_hosts=["pbx.example.com",
                                                                                    "*.corp.example"]))
    assert policy.refusal("2999") is None
    assert policy.refusal("29990") is not None  # patterns match the whole number
    assert policy.refusal("+12999") is not None
    assert policy.refusal("sip:alice@PBX.example.com") is None
    assert policy.refusal("sip:alice@pbx.example.com:5061;transport=tls") is None
    assert policy.refusal("sip:alice@pbx.example.com.evil.example") is not None
    assert policy.refusal("sip:bob@eu.corp.example") is None
    assert policy.refusal("sip:bob@corp.example") is not None  # *.corp.example means subdomains only
    assert policy.refusal("sip:bob@evilcorp.example") is not None
    assert policy.refusal("refer:sip:alice@pbx.example.com") is not None  # REFER needs refer: true
    refer = TransferPolicy.for_profile(_profile(sip_hosts=["pbx.example.com"], refer=True))
    assert refer.refusal("refer:sip:alice@pbx.example.com") is None
    assert refer.refusal("refer:sip:alice@evil.example") is not None


def test_a_profile_with_a_bad_allow_list_is_refused_at_load():
    with pytest.raises(ValueError, match="bad pattern"):
        TransferAllow(numbers=["2[0-9"])
    with pytest.raises(ValueError, match="bad host"):
        TransferAllow(sip_hosts=["evil example"])


@pytest.fixture
async def freeswitch():
    fs = await FakeFreeSwitch(password="esl-test-secret", host=HOST).start()
    yield fs
    await fs.close()


def meta() -> dict:
    return {"caller": "+15550111", "callee": "+15550100", "worker": "fs1", "profile": "front-desk",
            "rate": 8000}


async def _live_call(make_gateway, freeswitch, model_url: str):
    gw = await make_gateway(media_host=HOST, admin_host=HOST, esl_workers={"fs1": freeswitch.address},
                            model_url=model_url)
    await gw.control_plane.wait_connected(5)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    call = asyncio.create_task(place_call(f"ws://{HOST}:{gw.media_port}/stream/{call_uuid}", tone(0.1, 8000),
                                          rate=8000, metadata=meta(), token="abc", greeting_timeout=20,
                                          max_duration=30))
    for _ in range(250):
        if call_uuid in gw.calls and gw.calls[call_uuid].control is not None:
            break
        await asyncio.sleep(0.02)
    return gw, call_uuid, call


async def test_admin_api_attack_targets_get_403_and_never_reach_the_switch(make_gateway, fake_model,
                                                                           freeswitch):
    model = await fake_model(greeting_ms=20000, speed=1.0)  # the agent keeps talking: the call stays up
    gw, call_uuid, call = await _live_call(make_gateway, freeswitch, model.url)
    admin = f"http://{HOST}:{gw.admin_port}/calls/{call_uuid}"
    sent_before = len(freeswitch.api_commands())
    async with aiohttp.ClientSession() as http:
        for target in ATTACK_TARGETS:
            for verb in ("transfer", "conference"):
                async with http.post(f"{admin}/{verb}", json={"target": target}) as r:
                    assert r.status == 403, (verb, target, r.status)
                    assert "not allowed" in (await r.json())["detail"]
        async with http.get(admin) as r:  # the call is untouched and still live
            assert r.status == 200 and (await r.json())["state"] == "active"
        moves = [c for c in freeswitch.api_commands()[sent_before:] if c.startswith(ESL_MOVES)]
        assert moves == []
        async with http.post(f"{admin}/transfer", json={"target": "billing"}) as r:  # a named target
            assert r.status == 200
    assert await freeswitch.wait_for_command("api uuid_transfer") == \
        f"api uuid_transfer {call_uuid} 2001 XML ai-transfer"
    call.cancel()  # the replayed switch does not end the stream after a transfer; a real one would
    await asyncio.gather(call, return_exceptions=True)


@pytest.mark.parametrize("tool,target", [("transfer_call", "+19005550123"),
                                         ("transfer_call", "sip:toll@evil.example"),
                                         ("transfer_call", "refer:sip:x@evil.example"),
                                         ("add_participant", "sip:listener@evil.example"),
                                         ("add_participant", "+19005550123")])
async def test_model_tool_attack_targets_are_refused_and_never_reach_the_switch(
        make_gateway, fake_model, freeswitch, question_wav, tmp_path, tool, target):
    # The shipped front desk with every tool enabled: the policy, not a missing tool, must refuse.
    text = (DEFAULT_PROFILES_DIR / "front-desk.yaml").read_text()
    (tmp_path / "front-desk.yaml").write_text(
        text.replace("tools: [transfer_call, end_call, escalate]",
                     "tools: [transfer_call, end_call, escalate, add_participant]"))
    model = await fake_model(greeting_ms=300, reply_ms=300,
                             tool={"name": tool, "arguments": {"target": target}})
    gw = await make_gateway(media_host=HOST, admin_host=HOST, esl_workers={"fs1": freeswitch.address},
                            model_url=model.url, profiles_dir=tmp_path)
    assert tool in gw.profiles.profiles["front-desk"].tools
    await gw.control_plane.wait_connected(5)
    call_uuid = str(uuidlib.uuid4())
    freeswitch.add_channel(call_uuid)
    await place_call(f"ws://{HOST}:{gw.media_port}/stream/{call_uuid}", question_wav, rate=8000,
                     metadata=meta(), token="abc", reply_timeout=3.0)
    outputs: list = []
    for _ in range(250):
        outputs = model.sessions[0].of_type("conversation.item.create") if model.sessions else []
        if outputs:
            break
        await asyncio.sleep(0.02)
    (output,) = outputs
    result = json.loads(output["item"]["output"])
    assert result["ok"] is False and "unknown target" in result["error"]  # the model hears the names
    assert [c for c in freeswitch.api_commands() if c.startswith(ESL_MOVES)] == []
