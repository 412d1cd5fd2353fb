"""Every client event the gateway builds validates against the official SDK's GA models."""

import json

import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from gateway.audio.formats import CallAudio
from gateway.call.tools import schemas
from gateway.profiles import TurnDetection
from gateway.proto import realtime as rt

CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)


def _valid(event: dict) -> None:
    parsed = CLIENT_EVENT.validate_python(event)
    assert parsed.type == event["type"]


@pytest.mark.parametrize("rate,fmt", [(8000, {"type": "audio/pcmu"}),
                                      (16000, {"type": "audio/pcm", "rate": 24000})])
def test_session_update_selects_the_codec_path_by_call_rate(rate, fmt):
    ev = rt.session_update(audio_format=CallAudio(rate).model_format, instructions="be brief", voice="marin",
                           turn_detection=TurnDetection(threshold=0.6, silence_duration_ms=400).model_dump(),
                           tools=schemas(["transfer_call", "end_call", "escalate", "add_participant"]))
    _valid(ev)
    audio = ev["session"]["audio"]
    assert audio["input"]["format"] == fmt and audio["output"]["format"] == fmt
    td = audio["input"]["turn_detection"]
    assert td["type"] == "server_vad" and td["create_response"] is True and td["threshold"] == 0.6
    assert {t["name"] for t in ev["session"]["tools"]} == {"transfer_call", "end_call", "escalate",
                                                            "add_participant"}


def test_greeting_is_requested_verbatim():
    ev = rt.greeting_response("Hello there.")
    _valid(ev)
    assert ev["response"]["instructions"] == 'Say exactly: "Hello there."'


def test_control_events_validate():
    for ev in (rt.response_cancel(), rt.response_create(), rt.item_truncate("item_1", 1234),
               rt.function_call_output("call_1", {"ok": False, "error": "call control unavailable"}),
               rt.user_text_item("[DTMF 5]")):
        _valid(ev)


def test_audio_append_text_is_a_valid_event():
    _valid(json.loads(rt.input_audio_append(b"\xff" * 160)))


def test_error_classification():
    assert not rt.is_fatal_error({"type": "error", "error": {"type": "invalid_request_error",
                                                              "code": "response_cancel_not_active"}})
    assert rt.is_fatal_error({"type": "error", "error": {"type": "server_error", "code": None}})


def test_model_audio_durations():
    assert CallAudio(8000).model_ms(160) == 20.0
    assert CallAudio(16000).model_ms(960) == 20.0
