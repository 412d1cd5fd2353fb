"""Realtime protocol (GA) mapping, sans-I/O: client events we build and the server events we act on.

Builders return plain dicts (sent through the SDK's `send`) except `input_audio_append`, which returns the
JSON text itself because it runs 50 times a second per call. `tests/gateway/test_realtime_proto.py`
validates every builder against the SDK's own `openai.types.realtime` models.
"""

from __future__ import annotations

import base64
import json
from typing import Any

# The two session audio formats the gateway uses (chosen per call by gateway.audio.formats.CallAudio).
FORMAT_PCMU: dict[str, Any] = {"type": "audio/pcmu"}
FORMAT_PCM24: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
MODEL_PCM_RATE = 24000

def session_update(
    *,
    audio_format: dict[str, Any],
    instructions: str,
    voice: str,
    turn_detection: dict[str, Any],
    tools: list[dict[str, Any]],
    model: str | None = None,
    input_transcription: str | None = None,
) -> dict[str, Any]:
    """`turn_detection`: the profile's settings (threshold, prefix_padding_ms, silence_duration_ms,
    interrupt_response; defaults live in `gateway.profiles.TurnDetection`). `tools`: `session.tools[]`
    entries (`gateway.call.tools.schemas`)."""
    fmt = audio_format
    td = {
        "type": "server_vad",
        "threshold": float(turn_detection["threshold"]),
        "prefix_padding_ms": int(turn_detection["prefix_padding_ms"]),
        "silence_duration_ms": int(turn_detection["silence_duration_ms"]),
        "create_response": True,
        "interrupt_response": bool(turn_detection["interrupt_response"]),
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
    if input_transcription:  # the caller's words as text (OpenAI transcribes only when asked to)
        session["audio"]["input"]["transcription"] = {"model": input_transcription}
    if model:
        session["model"] = model
    if tools:
        session["tools"] = [dict(t) for t in tools]
        session["tool_choice"] = "auto"
    return {"type": "session.update", "session": session}


def greeting_response(greeting: str) -> dict[str, Any]:
    # Contract with the embedded engine (and a plain instruction OpenAI models follow): speak verbatim.
    return {"type": "response.create", "response": {"instructions": f'Say exactly: "{greeting}"'}}


SUMMARY_PURPOSE = "post_call_summary"


def summary_request(instructions: str) -> dict[str, Any]:
    """An out-of-band text response: it reads the call's conversation, adds nothing to it, speaks nothing
    (<https://platform.openai.com/docs/guides/realtime-conversations#create-responses-outside-the-default-conversation>)."""
    return {"type": "response.create",
            "response": {"conversation": "none", "output_modalities": ["text"], "instructions": instructions,
                         "metadata": {"purpose": SUMMARY_PURPOSE}}}


def response_text(response: dict[str, Any]) -> str:
    """The text of a finished text response (`response.done`'s output messages)."""
    parts = []
    for item in response.get("output") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for c in item.get("content") or []:
                if isinstance(c, dict) and c.get("type") in ("output_text", "text"):
                    parts.append(str(c.get("text") or ""))
    return "".join(parts).strip()


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
