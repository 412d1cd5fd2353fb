"""Agent profiles as the engine sees them: the `dialogue` section (plus name, greeting, voice).

The gateway reads every other key of the same YAML files; the engine validates only what it uses and
ignores the rest, so a gateway-side key never stops the engine from starting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.profiles import ProfileError, read_profile_file

log = logging.getLogger("gateway.engine.profiles")

DEFAULT_PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Intent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)  # any of these words alone selects the intent
    reply: str | None = None
    tool: ToolCall | None = None
    reply_after_tool: str | None = None


class Dialogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fallback_reply: str = "Sorry, I did not catch that."
    # Spoken when a tool's function_call_output says {"ok": false, "error": ...}; {error} is substituted.
    tool_failed_reply: str = "Sorry, that did not work: {error}."
    intents: list[Intent] = Field(default_factory=list)


class EngineProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    greeting: str | None = None
    voice: str | None = None
    dialogue: Dialogue = Field(default_factory=Dialogue)

    def phrases(self) -> list[str]:
        """Everything the recogniser listens for: every intent example, in profile order."""
        return [ex for intent in self.dialogue.intents for ex in intent.examples]


def profiles_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    if configured:
        return Path(configured)
    env = os.environ.get("GATEWAY_PROFILES_DIR")
    return Path(env) if env else DEFAULT_PROFILES_DIR


def load_profile(path: Path) -> EngineProfile:
    data = read_profile_file(path)
    try:
        return EngineProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {exc}") from exc


def load_profiles(directory: Path) -> dict[str, EngineProfile]:
    """All `*.yaml`/`*.yml` profiles of a directory by name. A broken file is logged and skipped so one
    bad profile never takes down the others; an empty result is the caller's error to report."""
    profiles: dict[str, EngineProfile] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            log.error("profile skipped", extra={"fields": {"path": str(path), "error": str(exc)}})
            continue
        profiles[profile.name] = profile
    return profiles
