"""Tool mapping (model tool -> call-control verb) and `gateway call`'s audio loading."""

import json

import numpy as np
import pytest
import soundfile

from gateway.call.tools import NO_CONTROL, run_tool
from gateway.client.call import load_audio
from gateway.profiles import load_profiles
from gateway.settings import DEFAULT_PROFILES_DIR

PROFILE = load_profiles(DEFAULT_PROFILES_DIR, "front-desk").select("front-desk")


class Control:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    async def transfer(self, target, headers=None):
        self.calls.append(("transfer", target))
        if self.fail:
            raise self.fail

    async def escalate(self, target, reason, urgency, summary):
        self.calls.append(("escalate", target, reason, urgency, summary))

    async def add_participant(self, target):
        self.calls.append(("add_participant", target))

    async def hangup(self, cause="NORMAL_CLEARING"):
        self.calls.append(("hangup", cause))


async def test_transfer_uses_the_profiles_target_never_a_raw_destination():
    control = Control()
    ok = await run_tool("transfer_call", json.dumps({"target": "billing"}), control=control, profile=PROFILE,
                        call_uuid="u")
    assert ok.output == {"ok": True, "target": "billing"} and control.calls == [("transfer", "2001")]
    raw = await run_tool("transfer_call", json.dumps({"target": "sip:+1900@evil"}), control=control,
                         profile=PROFILE, call_uuid="u")
    assert raw.output["ok"] is False and "unknown target" in raw.output["error"]
    assert len(control.calls) == 1


async def test_freeswitch_errors_and_missing_control_are_returned_to_the_model():
    control = Control(RuntimeError("-ERR NO_ROUTE"))
    failed = await run_tool("transfer_call", '{"target": "billing"}', control=control, profile=PROFILE,
                            call_uuid="u")
    assert failed.output == {"ok": False, "error": "-ERR NO_ROUTE"} and failed.speak
    none = await run_tool("escalate", '{"reason": "angry", "urgency": "high"}', control=None, profile=PROFILE,
                          call_uuid="u")
    assert none.output == {"ok": False, "error": NO_CONTROL}


async def test_escalate_carries_reason_urgency_and_summary():
    control = Control()
    r = await run_tool("escalate", '{"reason": "asked for a manager", "urgency": "high"}', control=control,
                       profile=PROFILE, call_uuid="u", summary="caller: manager please")
    assert r.output["ok"]
    assert control.calls == [("escalate", "sip:+15550199@trunk", "asked for a manager", "high",
                              "caller: manager please")]


async def test_end_call_ends_after_playback_without_another_response():
    r = await run_tool("end_call", '{"reason": "bye"}', control=None, profile=PROFILE, call_uuid="u")
    assert r.end_call and not r.speak and r.output["ok"]


@pytest.mark.parametrize("args", ["not json", "[1]"])
async def test_malformed_arguments_are_refused(args):
    r = await run_tool("transfer_call", args, control=Control(), profile=PROFILE, call_uuid="u")
    assert r.output["ok"] is False and "bad arguments" in r.output["error"]


async def test_a_tool_not_enabled_in_the_profile_is_refused():
    r = await run_tool("add_participant", '{"target": "billing"}', control=Control(), profile=PROFILE,
                       call_uuid="u")
    assert r.output["ok"] is False and "not enabled" in r.output["error"]


@pytest.mark.parametrize("rate_in,subtype,channels", [(44100, "FLOAT", 2), (22050, "PCM_16", 1),
                                                      (8000, "ULAW", 1), (48000, "PCM_24", 2)])
def test_any_common_wav_becomes_mono_l16_at_the_call_rate(tmp_path, rate_in, subtype, channels):
    t = np.arange(rate_in) / rate_in
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "in.wav"
    soundfile.write(str(path), np.column_stack([tone] * channels), rate_in, subtype=subtype)
    for rate in (8000, 16000):
        pcm = load_audio(path, rate)
        assert pcm.dtype == np.int16 and abs(len(pcm) - rate) <= 2
        assert 0.3 * 32767 < np.abs(pcm).max() < 0.55 * 32767
