"""Realtime protocol (GA) mapping, sans-I/O: client events we build and the server events we act on.

Builders return plain dicts (sent through the SDK's `send`) except `input_audio_append`, which returns the
JSON text itself because it runs 50 times a second per call. `tests/gateway/test_realtime_proto.py`
validates every builder against the SDK's own `openai.types.realtime` models.
"""

from __future__ import annotations

import base64
import json
from typing import Any

# Path selection (design decision 3): narrowband calls speak G.711 mu-law to the model (a table lookup,
# no resampling); wideband calls speak 24 kHz PCM through the streaming resampler.
FORMAT_PCMU: dict[str, Any] = {"type": "audio/pcmu"}
FORMAT_PCM24: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
MODEL_PCM_RATE = 24000

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "transfer_call": {
        "description": "Transfer the caller to a named destination (a person or department).",
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string", "description": "destination name"}},
            "required": ["target"],
        },
    },
    "end_call": {
        "description": "Hang up after saying goodbye.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string"}},
            "required": ["reason"],
        },
    },
    "escalate": {
        "description": "Hand the caller to a human colleague with a short reason.",
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "urgency": {"type": "string", "enum": ["low", "normal", "high"]},
            },
            "required": ["reason", "urgency"],
        },
    },
    "add_participant": {
        "description": "Bring a human into the call as a conference participant.",
        "parameters": {
            "type": "object",
            "properties": {"target": {"type": "string"}},
            "required": ["target"],
        },
    },
}


def audio_format_for_rate(rate: int) -> dict[str, Any]:
    return dict(FORMAT_PCMU) if rate == 8000 else dict(FORMAT_PCM24)


def session_update(
    *,
    rate: int,
    instructions: str,
    voice: str,
    turn_detection: dict[str, Any],
    tools: list[str],
    model: str | None = None,
) -> dict[str, Any]:
    fmt = audio_format_for_rate(rate)
    td = {
        "type": "server_vad",
        "threshold": float(turn_detection.get("threshold", 0.5)),
        "prefix_padding_ms": int(turn_detection.get("prefix_padding_ms", 300)),
        "silence_duration_ms": int(turn_detection.get("silence_duration_ms", 500)),
        "create_response": True,
        "interrupt_response": bool(turn_detection.get("interrupt_response", True)),
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": fmt, "turn_detection": td},
            "output": {"format": dict(fmt), "voice": voice},
        },
    }
    if model:
        session["model"] = model
    if tools:
        session["tools"] = [{"type": "function", "name": name, **TOOL_SCHEMAS[name]} for name in tools]
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def greeting_response(greeting: str) -> dict[str, Any]:
    # Contract with the embedded engine (and a plain instruction OpenAI models follow): speak verbatim.
    return {"type": "response.create", "response": {"instructions": f'Say exactly: "{greeting}"'}}


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def response_cancel() -> dict[str, Any]:
    return {"type": "response.cancel"}


def item_truncate(item_id: str, audio_end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": int(audio_end_ms),
    }


def function_call_output(call_id: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": json.dumps(output)},
    }


def user_text_item(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def input_audio_append(payload: bytes) -> str:
    """`input_audio_buffer.append` as JSON text (payload already in the session's input format)."""
    return f'{{"type":"input_audio_buffer.append","audio":"{base64.b64encode(payload).decode("ascii")}"}}'


def audio_ms(payload_len: int, rate: int) -> float:
    """Milliseconds of model-format audio in `payload_len` bytes (mu-law 8 kHz or PCM16 24 kHz)."""
    return payload_len / 8.0 if rate == 8000 else payload_len / (MODEL_PCM_RATE * 2 / 1000.0)


# Error codes that concern a single request and leave the session usable (e.g. cancelling when the
# response already finished). Anything else is treated as a model failure.
BENIGN_ERROR_CODES = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "item_truncate_invalid_item_id",
        "invalid_value",
    }
)


def is_fatal_error(event: dict[str, Any]) -> bool:
    err = event.get("error") or {}
    if not isinstance(err, dict):
        return True
    if err.get("code") in BENIGN_ERROR_CODES:
        return False
    return err.get("type") not in ("invalid_request_error",)
