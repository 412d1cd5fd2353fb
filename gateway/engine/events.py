"""The Realtime wire as the session sees it: client event models, refusals, server event builders.

Client events are checked against the official SDK's own client-event models
(`openai.types.realtime`), so a field of the wrong type or an unsupported value is refused exactly where
the real API would refuse it. Server events are plain dicts in the SDK's GA shape; their identifiers
are per-session counters, so the same input gives the same output, byte for byte.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, get_args

import numpy as np
from pydantic import BaseModel


def _client_event_models() -> dict[str, type[BaseModel]]:
    from openai.types.realtime.realtime_client_event import RealtimeClientEvent

    union = get_args(RealtimeClientEvent)[0]
    models: dict[str, type[BaseModel]] = {}
    for cls in get_args(union):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        models[literal] = cls
    return models


CLIENT_EVENT_MODELS = _client_event_models()


class ClientError(Exception):
    """A client event the session refuses; becomes an `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


MAX_JSON_DEPTH = 64  # the deepest real client event (a tool's JSON schema) nests far less
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_depth(raw: str) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it (so without recursion:
    Python's parser raises RecursionError on a few thousand levels)."""
    if raw.count("[") + raw.count("{") == 0:
        return 0
    skeleton = _JSON_STRING.sub("", raw).encode("utf-8", "replace")  # brackets in strings do not nest
    b = np.frombuffer(skeleton, np.uint8)
    steps = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D)).astype(np.int32)
    return int(np.cumsum(steps).max()) if len(steps) else 0


def parse_client_event(raw: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """One WebSocket message -> a JSON object, or `ClientError` (these refusals name no client event)."""
    if isinstance(raw, bytes):
        raise ClientError(
            "invalid_message", "binary frames are not part of the Realtime protocol; send JSON text frames"
        )
    # Cheap first: only a message with more brackets than the limit can nest past it.
    if raw.count("[") + raw.count("{") > max_depth and json_depth(raw) > max_depth:
        raise ClientError(
            "json_too_deep", f"the message nests arrays or objects deeper than {max_depth} levels"
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ClientError("invalid_json", f"the message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ClientError("invalid_json", "a client event must be a JSON object")
    return data


class EventBuilder:
    """Server events of one session, with per-session identifiers (`event_00001`, `item_00001`, ...).

    `next(count)` is atomic under the GIL, so an identifier is never handed out twice even when the
    adapter builds an event outside the session's own turn (the oversized-message refusal)."""

    def __init__(self) -> None:
        self._counters = {kind: itertools.count(1) for kind in ("event", "item", "resp", "call")}

    def new_id(self, kind: str) -> str:
        return f"{kind}_{next(self._counters[kind]):05d}"

    def event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": self.new_id("event"), **fields}

    def error(
        self,
        code: str,
        message: str,
        param: str | None,
        client_event_id: str | None,
        type_: str = "invalid_request_error",
    ) -> dict[str, Any]:
        return self.event(
            "error",
            error={
                "type": type_,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        )
