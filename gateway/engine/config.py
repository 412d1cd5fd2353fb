"""Session configuration: the defaults a session starts with and how `session.update` changes them.

Pure: a configuration dict and an update in, the new configuration out (or `ClientError`). The shape is
the GA `session` object of the official SDK, so `session.created` / `session.updated` echo it as is.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from . import audio
from .events import ClientError

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
# semantic_vad has no silence setting; its eagerness picks one (high answers soonest).
EAGERNESS_SILENCE_MS = {"high": 300, "medium": 500, "auto": 500, "low": 900}
MAX_PREFIX_MS = 2_000  # prefix padding honoured at most (it sets how much idle audio a session keeps)


def initial_config(model: str, voice: str) -> dict[str, Any]:
    return {
        "type": "realtime",
        "model": model,
        "instructions": "",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(DEFAULT_TURN_DETECTION),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": voice,
                "speed": 1.0,
            },
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }


def silence_ms(td: dict[str, Any]) -> int:
    """The silence that ends a turn under this turn detection."""
    silence = td.get("silence_duration_ms")
    if td.get("type") == "semantic_vad":
        silence = EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 500)
    return silence or 500


def prefix_ms(td: dict[str, Any]) -> int:
    return max(0, min(MAX_PREFIX_MS, int(td.get("prefix_padding_ms") or 0)))


def _format(ftype: str, param: str) -> dict[str, Any]:
    if ftype not in audio.FORMATS:
        raise ClientError("invalid_value", f"unsupported audio format {ftype!r}", param)
    return {"type": "audio/pcm", "rate": 24000} if ftype == "audio/pcm" else {"type": ftype}


def _turn_detection(td: dict[str, Any]) -> dict[str, Any]:
    merged = (
        dict(DEFAULT_TURN_DETECTION)
        if td.get("type") == "server_vad"
        else {
            "type": "semantic_vad",
            "eagerness": "auto",
            "create_response": True,
            "interrupt_response": True,
        }
    )
    merged.update({k: v for k, v in td.items() if v is not None})
    threshold = merged.get("threshold", 0.5)
    if isinstance(threshold, float) and not math.isfinite(threshold):
        raise ClientError(
            "invalid_value",
            "threshold must be a number between 0 and 1",
            "session.audio.input.turn_detection.threshold",
        )
    return merged


def apply_update(config: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """The configuration after a (schema-valid) `session.update` carrying `s`; `config` is not changed."""
    cfg = copy.deepcopy(config)
    for key in ("instructions", "tools", "tool_choice", "max_output_tokens"):
        if key in s and s[key] is not None:
            cfg[key] = s[key]
    if s.get("output_modalities") is not None:
        mods = s["output_modalities"]
        if len(mods) != 1:
            raise ClientError(
                "invalid_value",
                'output_modalities must be ["audio"] or ["text"]',
                "session.output_modalities",
            )
        cfg["output_modalities"] = list(mods)
    a = s.get("audio") or {}
    ain, aout = a.get("input") or {}, a.get("output") or {}
    for target, src, name in (
        (cfg["audio"]["input"], ain, "input"),
        (cfg["audio"]["output"], aout, "output"),
    ):
        fmt = src.get("format")
        if fmt is not None:
            target["format"] = _format(fmt.get("type") or "audio/pcm", f"session.audio.{name}.format.type")
    if "turn_detection" in ain:
        td = ain["turn_detection"]
        cfg["audio"]["input"]["turn_detection"] = None if td is None else _turn_detection(td)
    for key in ("transcription", "noise_reduction"):
        if key in ain:
            cfg["audio"]["input"][key] = ain[key]
    for key in ("voice", "speed"):
        if aout.get(key) is not None:
            cfg["audio"]["output"][key] = aout[key]
    return cfg
