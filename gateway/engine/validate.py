"""Check server events against the official SDK's typed models (`openai.types.realtime`).

Strict on purpose: the event's `type` selects exactly one SDK class, the event must validate against it,
and no field anywhere may be unknown to the SDK (its models accept extras silently, which would hide
a misspelt field). Used by the tests on every event the engine emits.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel


def _server_event_models() -> dict[str, type[BaseModel]]:
    from openai.types.realtime.realtime_server_event import RealtimeServerEvent

    union = get_args(RealtimeServerEvent)[0]
    models: dict[str, type[BaseModel]] = {}
    for cls in get_args(union):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        models[literal] = cls
    return models


SERVER_EVENT_MODELS = _server_event_models()


class EventSchemaError(AssertionError):
    pass


def _extras(obj: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(obj, BaseModel):
        for key in obj.model_extra or {}:
            found.append(f"{path}.{key}")
        for name in type(obj).model_fields:
            found += _extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found += _extras(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += _extras(v, f"{path}.{k}")
    return found


def validate_server_event(event: dict[str, Any]) -> BaseModel:
    etype = event.get("type")
    cls = SERVER_EVENT_MODELS.get(etype)  # type: ignore[arg-type]
    if cls is None:
        raise EventSchemaError(f"unknown server event type {etype!r}")
    try:
        parsed = cls.model_validate(event)
    except Exception as exc:  # pydantic.ValidationError, re-raised as an assertion with the event type
        raise EventSchemaError(f"{etype}: {exc}") from exc
    extras = _extras(parsed, etype)
    if extras:
        raise EventSchemaError(f"{etype}: fields unknown to the SDK: {extras}")
    return parsed
