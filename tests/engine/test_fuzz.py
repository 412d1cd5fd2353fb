"""Hostile client events against the sans-I/O core: whatever arrives, the session answers with events
the SDK accepts (usually `error`) and never raises."""

from __future__ import annotations

import base64
import json

from engine_helpers import _engine_defaults
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.engine.session import CLIENT_EVENT_MODELS, RealtimeSession
from gateway.engine.validate import validate_server_event

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "session",
        "item",
        "audio",
        "item_id",
        "content_index",
        "audio_end_ms",
        "response",
        "response_id",
        "event_id",
        "type",
        "format",
        "turn_detection",
        "tools",
    ]
)
events = st.builds(
    lambda t, fields: {**fields, "type": t},
    st.sampled_from(sorted(CLIENT_EVENT_MODELS) + ["nope", ""]),
    st.dictionaries(field_names, json_values, max_size=5),
)
b64_audio = st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode())
ids = st.sampled_from(["item_00001", "item_00002", "item_00003", "call_00001", "x", ""])
ints = st.integers(-5, 10**7)
fmt = st.sampled_from([{"type": "audio/pcmu"}, {"type": "audio/pcma"}, {"type": "audio/pcm", "rate": 24000}])
text = st.text(max_size=40)
# Schema-valid events with hostile values: these get past the SDK models into the state machine.
valid_events = st.one_of(
    st.builds(
        lambda i, c, ms: {
            "type": "conversation.item.truncate",
            "item_id": i,
            "content_index": c,
            "audio_end_ms": ms,
        },
        ids,
        st.integers(-1, 2),
        ints,
    ),
    st.builds(lambda i: {"type": "conversation.item.delete", "item_id": i}, ids),
    st.builds(lambda i: {"type": "conversation.item.retrieve", "item_id": i}, ids),
    st.builds(
        lambda c, o: {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": c, "output": o},
        },
        ids,
        text,
    ),
    st.builds(
        lambda t: {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}]},
        },
        text,
    ),
    st.builds(
        lambda i, f: {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": i, "turn_detection": None}, "output": {"format": f}},
            },
        },
        fmt,
        fmt,
    ),
    st.builds(
        lambda th, sil, cr, ir: {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": th,
                            "silence_duration_ms": sil,
                            "create_response": cr,
                            "interrupt_response": ir,
                        }
                    }
                },
            },
        },
        st.floats(0, 1),
        st.integers(0, 5000),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(
        lambda instr, mods, choice: {
            "type": "response.create",
            "response": {"instructions": instr, "output_modalities": mods, "tool_choice": choice},
        },
        text | st.just('Say exactly: "hi"'),
        st.sampled_from([["audio"], ["text"]]),
        st.sampled_from(["auto", "none", "required"]),
    ),
    st.just({"type": "response.cancel"}),
    st.just({"type": "input_audio_buffer.commit"}),
    st.just({"type": "input_audio_buffer.clear"}),
    st.just({"type": "output_audio_buffer.clear"}),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(events | b64_audio.map(lambda a: {"type": "input_audio_buffer.append", "audio": a}), max_size=8)
)
def test_core_survives_any_event_sequence(sequence):
    engine = _engine_defaults()
    session = RealtimeSession(engine.profiles["front-desk"], engine.engines, pace=0)
    for ev in session.open(0.0):
        validate_server_event(ev)
    now = 0.0
    for event in sequence:
        for out in session.receive(json.dumps(event), now):
            validate_server_event(out)
            assert out.get("error", {}).get("code") != "internal_error", (event, out)
        now += 0.1
    # and it still works afterwards
    out = session.receive(
        json.dumps(
            {
                "type": "response.create",
                "response": {"instructions": 'Say exactly: "Still fine."', "output_modalities": ["text"]},
            }
        ),
        now,
    )
    if session.response is not None or not any(e["type"] == "response.done" for e in out):
        out += session.receive(json.dumps({"type": "response.cancel"}), now)
    assert any(e["type"] in ("response.done", "error") for e in out)


def test_non_finite_and_huge_turn_settings_are_refused_or_bounded():
    engine = _engine_defaults()
    session = RealtimeSession(engine.profiles["front-desk"], engine.engines, pace=0)
    session.open(0.0)
    for raw in (
        '{"type":"session.update","session":{"type":"realtime","audio":{"input":{"turn_detection":'
        '{"type":"server_vad","threshold":NaN}}}}}',
        '{"type":"session.update","session":{"type":"realtime","audio":{"input":{"turn_detection":'
        '{"type":"server_vad","threshold":Infinity}}}}}',
    ):
        (out,) = session.receive(raw, 0.0)
        assert out["type"] == "error" and out["error"]["code"] == "invalid_value"
    # A prefix padding of hours is accepted but bounded: an idle session keeps ~2 s of audio, not hours.
    (out,) = session.receive(
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "turn_detection": {"type": "server_vad", "prefix_padding_ms": 10_000_000},
                        }
                    },
                },
            }
        ),
        0.0,
    )
    assert out["type"] == "session.updated"
    silence = base64.b64encode(b"\xff" * 8000).decode()  # 1 s
    for _ in range(30):
        session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": silence}), 0.0)
    session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": silence}), 0.0)
    (committed, *_rest) = session.receive(json.dumps({"type": "input_audio_buffer.commit"}), 0.0)
    assert committed["type"] == "input_audio_buffer.committed"
    transcribed = [e for e in _rest if e["type"].endswith("transcription.completed")]
    assert transcribed and transcribed[0]["usage"]["seconds"] <= 2.5
