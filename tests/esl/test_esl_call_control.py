"""CallControl / ControlPlane: each verb sends exactly the documented FreeSWITCH commands and turns
-ERR into CallControlError; file-mode playback queues in order and flushes on barge-in."""

from __future__ import annotations

import asyncio
import json

import pytest
from fakes.freeswitch_esl import FakeFreeSwitch

from gateway.audio.formats import CallAudio
from gateway.call.control import (
    CallControl,
    CallControlError,
    ControlPlane,
    ControlSettings,
    ErrorKind,
    header_text,
)
from gateway.call.playback import Playback

CALL = "6cb13cce-643b-4f1c-ae2c-d0fa60be795a"


@pytest.fixture
async def plane(fake_fs: FakeFreeSwitch):
    fake_fs.add_channel(CALL)
    cp = ControlPlane.from_settings({"fs1": fake_fs.address}, backoff_initial=0.05)
    cp.settings = ControlSettings(member_join_timeout=2, member_poll_interval=0.02, participant_settle_s=0.2,
                                  participant_answer_timeout=2)
    await cp.start()
    await cp.wait_connected(5)
    try:
        yield cp
    finally:
        await cp.close()


@pytest.fixture
def dtmf() -> list[str]:
    return []


@pytest.fixture
def control(plane: ControlPlane, dtmf: list[str]) -> CallControl:
    ctl = plane.for_call(CALL, "fs1", on_dtmf=dtmf.append)
    assert ctl is not None
    return ctl


def sent(fake_fs: FakeFreeSwitch, since: int = 0) -> list[str]:
    """API commands FreeSWITCH received, in order, as the command lines after `api `."""
    return [c.removeprefix("api ") for c in fake_fs.commands[since:] if c.startswith(("api ", "bgapi "))]


async def test_hangup_sends_uuid_kill_with_cause(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.hangup("USER_BUSY")
    assert sent(fake_fs) == [f"uuid_kill {CALL} USER_BUSY"]
    assert fake_fs.commands[-1] == f"api uuid_kill {CALL} USER_BUSY"


async def test_hangup_default_cause_and_release_on_hangup_complete(
        fake_fs: FakeFreeSwitch, plane: ControlPlane, control: CallControl) -> None:
    await control.hangup()
    assert sent(fake_fs) == [f"uuid_kill {CALL} NORMAL_CLEARING"]
    await _until(lambda: control.released)
    assert control.hangup_cause == "NORMAL_CLEARING"
    assert CALL not in plane.calls


async def test_hangup_of_a_gone_channel_raises_with_freeswitch_text(fake_fs: FakeFreeSwitch,
                                                                      control: CallControl) -> None:
    fake_fs.channels.discard(CALL)
    with pytest.raises(CallControlError) as info:
        await control.hangup()
    assert str(info.value) == "No such channel!"
    assert info.value.reply == "-ERR No such channel!" and info.value.kind is ErrorKind.REFUSED


async def test_bad_cause_is_refused_before_reaching_freeswitch(fake_fs: FakeFreeSwitch,
                                                               control: CallControl) -> None:
    with pytest.raises(CallControlError) as info:
        await control.hangup("NORMAL_CLEARING\n\napi shutdown")
    assert info.value.kind is ErrorKind.INVALID
    assert sent(fake_fs) == []


async def test_transfer_to_extension(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.transfer("2001")
    assert sent(fake_fs) == [f"uuid_transfer {CALL} 2001 XML ai-transfer"]


async def test_transfer_to_sip_uri_goes_through_the_edge_extension(fake_fs: FakeFreeSwitch,
                                                                    control: CallControl) -> None:
    await control.transfer("sip:+15550199@trunk")
    assert sent(fake_fs) == [
        f"uuid_setvar {CALL} ai_transfer_uri sip:+15550199@trunk",
        f"uuid_transfer {CALL} ai-transfer-uri XML ai-transfer",
    ]
    assert fake_fs.channel_vars[CALL]["ai_transfer_uri"] == "sip:+15550199@trunk"


async def test_transfer_by_refer(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.transfer("refer:sip:+15550199@carrier.example")
    assert sent(fake_fs) == [f"uuid_deflect {CALL} sip:+15550199@carrier.example"]


async def test_refer_refused_by_freeswitch_is_reported(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    fake_fs.on_api("uuid_deflect", "-ERR Cannot deflect a call that is not answered\n")
    with pytest.raises(CallControlError, match="Cannot deflect"):
        await control.transfer("refer:sip:x@y")


@pytest.mark.parametrize("target", ["2001 XML default", "sip:a@b;transport=tcp", "x'y", "", "sip:a b@c",
                                    "reception", "2001;x"])
async def test_hostile_transfer_targets_are_refused(fake_fs: FakeFreeSwitch, control: CallControl,
                                                    target: str) -> None:
    with pytest.raises(CallControlError) as info:
        await control.transfer(target)
    assert info.value.kind is ErrorKind.INVALID
    assert not [c for c in sent(fake_fs) if c.startswith("uuid_transfer")]


async def test_escalation_carries_reason_urgency_and_summary_headers(fake_fs: FakeFreeSwitch,
                                                                      control: CallControl) -> None:
    summary = 'caller: I was charged twice\nagent: "Let me check"\\ caller: I want a manager'
    await control.escalate("sip:+15550199@trunk", "caller asked for a person", "high", summary)
    assert sent(fake_fs) == [
        f"uuid_setvar {CALL} sip_h_X-AI-Reason caller asked for a person",
        f"uuid_setvar {CALL} sip_h_X-AI-Urgency high",
        f"uuid_setvar {CALL} sip_h_X-AI-Summary caller: I was charged twice agent: Let me check "
        "caller: I want a manager",
        f"uuid_setvar {CALL} ai_transfer_uri sip:+15550199@trunk",
        f"uuid_transfer {CALL} ai-transfer-uri XML ai-transfer",
    ]
    assert fake_fs.channel_vars[CALL]["sip_h_X-AI-Reason"] == "caller asked for a person"


def test_header_text_is_bounded_and_single_line() -> None:
    text = header_text("a\r\nX-Injected: 1\t" + "b" * 1000, 50)
    assert "\r" not in text and "\n" not in text and len(text) == 50 and text.endswith("...")


async def test_add_participant_conference_dial_and_coach(fake_fs: FakeFreeSwitch,
                                                         control: CallControl) -> None:
    await control.add_participant("2001")
    conf = f"ai-{CALL}"
    cmds = sent(fake_fs)
    human, coach = [c for c in cmds if " bgdial " in c]
    assert cmds[:2] == [f"uuid_setvar {CALL} ai_conference {conf}",
                        f"uuid_transfer {CALL} ai-conference XML ai-transfer"]
    assert human.startswith(f"conference {conf} bgdial {{origination_uuid=")
    assert human.endswith("}loopback/2001/ai-transfer 0000000000 Caller")
    assert coach.startswith(f"conference {conf} bgdial {{origination_uuid={control.coach_uuid},"
                            f"ai_parent_uuid={CALL},loopback_export=ai_parent_uuid}}loopback/ai-coach/ai-gateway")
    # Members: caller joined first (id 1), human (2), coach (3): the caller stops hearing the coach.
    assert [c for c in cmds if " relate " in c] == [f"conference {conf} relate 3 1 nospeak"]
    assert fake_fs.conferences[conf].relations == ["3 1 nospeak"]


async def test_second_participant_is_only_dialled_in(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.add_participant("2001")
    start = len(fake_fs.commands)
    await control.add_participant("2002")
    (only,) = [c for c in sent(fake_fs, start) if " list" not in c]  # `list`: checking the human joined
    assert only.startswith(f"conference ai-{CALL} bgdial {{origination_uuid=")
    assert only.endswith("}loopback/2002/ai-transfer 0000000000 Caller")


async def test_add_participant_sip_uri_exports_the_target_to_the_loopback_leg(fake_fs: FakeFreeSwitch,
                                                                               control: CallControl) -> None:
    await control.add_participant("sip:+15550199@trunk")
    (human,) = [c for c in sent(fake_fs) if " bgdial " in c and "ai-coach" not in c]
    assert ",ai_transfer_uri=sip:+15550199@trunk,loopback_export=ai_transfer_uri}" in human
    assert "}loopback/ai-transfer-uri/ai-transfer " in human


async def test_add_participant_reports_a_coach_that_never_joins(fake_fs: FakeFreeSwitch,
                                                                control: CallControl) -> None:
    fake_fs.on_api(f"conference ai-{CALL} bgdial", "+OK Job-UUID: 4f7e7a1c-2f5e-4b7f-9d4e-0c1d2e3f4a5b\n")
    with pytest.raises(CallControlError, match="did not join") as info:
        await control.add_participant("2001")
    assert info.value.kind is ErrorKind.TIMEOUT


async def test_kick_needs_a_conference(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    with pytest.raises(CallControlError):
        await control.kick("2")
    await control.add_participant("2001")
    await control.kick("2")
    assert [c for c in sent(fake_fs) if " kick " in c][-1] == f"conference ai-{CALL} kick 2"


async def test_play_and_flush(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.play("/var/lib/ai/hold.wav")
    await control.flush_playback()
    assert sent(fake_fs) == [f"uuid_broadcast {CALL} /var/lib/ai/hold.wav aleg", f"uuid_break {CALL} all"]


async def test_recording(fake_fs: FakeFreeSwitch, control: CallControl) -> None:
    await control.start_recording("/var/lib/freeswitch/recordings/call.wav")
    await control.stop_recording("/var/lib/freeswitch/recordings/call.wav")
    assert sent(fake_fs) == [
        f"uuid_record {CALL} start /var/lib/freeswitch/recordings/call.wav",
        f"uuid_record {CALL} stop /var/lib/freeswitch/recordings/call.wav",
    ]


async def test_dtmf_events_reach_on_dtmf(fake_fs: FakeFreeSwitch, control: CallControl,
                                         dtmf: list[str]) -> None:
    for digit in "12#":
        await fake_fs.emit(CALL, "DTMF", headers={"DTMF-Digit": digit, "DTMF-Duration": "1600"})
    await fake_fs.emit("031d4ed3-e244-4798-9310-9d2f31cab2c2", "DTMF", headers={"DTMF-Digit": "9"})
    await _until(lambda: len(dtmf) == 3)
    assert dtmf == ["1", "2", "#"]


def _play_body(n: int) -> str:
    # The `data` object of streamAudio minus audioData, plus the temp file (research §1.6).
    return json.dumps({"audioDataType": "raw", "sampleRate": 8000, "file": f"/tmp/{CALL}_{n}.tmp.r8"},
                      separators=(",", ":"))


class _NoAudio:
    """File mode sends no paced audio in these tests: only the file player runs."""

    codec_name = "freeswitch"
    frame_ms = 200
    echoes_marks = False
    closed = False

    async def send_audio(self, audio: bytes) -> bool:
        return True


@pytest.fixture
async def file_player(control: CallControl):
    pb = Playback(_NoAudio(), CallAudio(8000), asyncio.get_running_loop().time, lead_ms=400, frame_ms=200,
                  files=control)  # type: ignore[arg-type]
    control.on_play_file = pb.on_play_file
    task = asyncio.create_task(pb.run())
    yield pb
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_file_mode_plays_files_in_arrival_order(fake_fs: FakeFreeSwitch, control: CallControl,
                                                      file_player: Playback) -> None:
    for n in range(5):
        await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body=_play_body(n))
    await _until(lambda: control.files_played == 5)
    # Displaced back to back: broadcasts would leave ~120 ms without audio between two files (issue 10
    # item 7, measured on FreeSWITCH 1.10.12).
    assert sent(fake_fs) == [f"uuid_displace {CALL} start /tmp/{CALL}_{n}.tmp.r8 0 mux" for n in range(5)]


async def test_file_mode_flush_drops_queued_files_and_breaks(fake_fs: FakeFreeSwitch, control: CallControl,
                                                             file_player: Playback) -> None:
    fake_fs.api_delay = 0.05  # FreeSWITCH busy: files pile up in our queue
    for n in range(6):
        await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body=_play_body(n))
    await fake_fs.wait_for_command("api uuid_displace")
    file_player.interrupt()  # barge-in
    await file_player.flush_files()
    fake_fs.api_delay = 0
    await asyncio.sleep(0.1)
    cmds = sent(fake_fs)
    breaks = [i for i, c in enumerate(cmds) if c == f"uuid_break {CALL} all"]
    played = [c for c in cmds if c.startswith("uuid_displace") and " start " in c]
    assert breaks and all(" start " not in c for c in cmds[breaks[-1]:])
    assert 1 <= len(played) < 6  # the rest were dropped, not played after the break
    assert played == [f"uuid_displace {CALL} start /tmp/{CALL}_{n}.tmp.r8 0 mux" for n in range(len(played))]
    # Audio after the barge-in plays again.
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body=_play_body(9))
    await fake_fs.wait_for_command(f"api uuid_displace {CALL} start /tmp/{CALL}_9.tmp.r8")


async def test_stream_mode_ignores_play_events(fake_fs: FakeFreeSwitch, plane: ControlPlane) -> None:
    ctl = plane.for_call(CALL, "fs1")
    assert ctl is not None and ctl.on_play_file is None  # no file player: stream mode
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body=_play_body(0))
    await fake_fs.emit(CALL, "DTMF", headers={"DTMF-Digit": "1"})
    await asyncio.sleep(0.1)
    assert ctl.files_played == 0 and not [c for c in sent(fake_fs) if c.startswith("uuid_broadcast")]


async def test_malformed_play_event_is_refused(fake_fs: FakeFreeSwitch, control: CallControl,
                                               file_player: Playback) -> None:
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body='{"file":"/tmp/a b; api x"}')
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body="not json")
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::play", body=_play_body(1))
    await _until(lambda: control.files_played == 1)
    assert [c for c in sent(fake_fs) if c.startswith("uuid_displace")] == [
        f"uuid_displace {CALL} start /tmp/{CALL}_1.tmp.r8 0 mux"]


async def test_stream_events_never_make_the_gateway_hang_up(fake_fs: FakeFreeSwitch, plane: ControlPlane,
                                                           control: CallControl) -> None:
    # The worker owns a lost stream (ai_stream_start.lua fails over, ai_stream_lost.lua reconnects or
    # releases): a connect error of a failover attempt for a call this gateway never had, or a stream
    # closing on a parked call, must not become a uuid_kill that races the worker's reconnect.
    other = "031d4ed3-e244-4798-9310-9d2f31cab2c2"
    fake_fs.add_channel(other)
    await fake_fs.emit(other, "CUSTOM", subclass="mod_audio_stream::error",
                       body='{"status":"error","message":{"code":6,"error":"connect failed"}}')
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::error",
                       body='{"status":"error","message":{"code":6,"error":"connect failed"}}')
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::disconnect",
                       body='{"status":"disconnected","message":{"code":1001,"reason":"going away"}}')
    await fake_fs.emit(CALL, "DTMF", headers={"DTMF-Digit": "5"})  # a later event: the others were handled
    await asyncio.sleep(0.2)
    assert not [c for c in fake_fs.commands if c.startswith("api uuid_kill")]


async def test_stream_closed_after_the_gateway_moved_the_call_does_not_hang_it_up(
        fake_fs: FakeFreeSwitch, plane: ControlPlane, control: CallControl) -> None:
    # Issue 10 item 3: the model-failure fallback transfers the call, then the stream closes while the
    # channel is still reported in park; that close must not cancel the transfer with a uuid_kill.
    await control.transfer("2001")
    await fake_fs.emit(CALL, "CUSTOM", subclass="mod_audio_stream::disconnect",
                       body='{"status":"disconnected","message":{"code":1000,"reason":"transferred"}}')
    await fake_fs.emit(CALL, "DTMF", headers={"DTMF-Digit": "5"})  # a later event: the first was handled
    await asyncio.sleep(0.2)
    assert not [c for c in fake_fs.commands if c.startswith("api uuid_kill")]


async def test_add_participant_fails_when_the_human_leg_hangs_up(fake_fs: FakeFreeSwitch,
                                                                 control: CallControl) -> None:
    # Issue 10 item 5: the loopback leg answers, the carrier side fails, the leg hangs up at once.
    task = asyncio.create_task(control.add_participant("2001"))
    human_cmd = await fake_fs.wait_for_command(f"api conference ai-{CALL} bgdial {{origination_uuid=")
    human = human_cmd.split("origination_uuid=", 1)[1].split("}", 1)[0]
    await fake_fs.emit(human, "CHANNEL_HANGUP", headers={"Hangup-Cause": "INCOMPATIBLE_DESTINATION"})
    with pytest.raises(CallControlError, match="INCOMPATIBLE_DESTINATION") as info:
        await task
    assert info.value.kind is ErrorKind.REFUSED


async def test_worker_down_is_a_503_error_and_recovers(fake_fs: FakeFreeSwitch, plane: ControlPlane,
                                                       control: CallControl) -> None:
    await fake_fs.stop_listening()
    await fake_fs.drop()
    await _until(lambda: not plane.clients["fs1"].connected)
    with pytest.raises(CallControlError) as info:
        await control.transfer("2001")
    assert info.value.kind is ErrorKind.UNREACHABLE and "fs1" in str(info.value)
    await fake_fs.restart_listening()
    await plane.wait_connected(5)
    await control.transfer("2001")
    assert sent(fake_fs)[-1] == f"uuid_transfer {CALL} 2001 XML ai-transfer"


def test_for_call_picks_the_worker(fake_fs: FakeFreeSwitch) -> None:
    cp = ControlPlane.from_settings({"fs1": "127.0.0.1:1:x", "fs2": "127.0.0.1:2:y"})
    assert cp.for_call(CALL, None) is None  # two workers: the metadata must say which
    assert cp.for_call(CALL, "fs9") is None
    assert cp.for_call("not a uuid; api shutdown", "fs1") is None
    single = ControlPlane.from_settings({"fs1": "127.0.0.1:1:x"})
    ctl = single.for_call(CALL, None)
    assert ctl is not None and ctl.worker_id == "fs1"


async def _until(predicate, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - per-call deadline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
