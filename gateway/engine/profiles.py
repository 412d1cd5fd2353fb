"""Agent profiles as the engine sees them: `dialogue` and `knowledge` (plus name, greeting, voice and
instructions).

The gateway reads every other key of the same YAML files; the engine validates only what it uses and
ignores the rest, so a gateway-side key never stops the engine from starting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.profiles import ProfileError, read_profile_file

log = logging.getLogger("gateway.engine.profiles")

DEFAULT_PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


Slot = Literal["date", "time", "name", "number"]


class Intent(BaseModel):
    """Something the caller asks the agent to do. Templates may use `{when}`, `{date}`, `{time}`, `{name}`,
    `{number}` (slots heard in the caller's words) and, after a tool, the tool output's fields."""

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str | None = None  # how the agent names it in a clarifying question ("cancel an appointment")
    examples: list[str] = Field(default_factory=list)
    # Words or phrases that are evidence for this intent ("cancel", "call off"); an intent is chosen only
    # on a keyword or a close example, never on a vague likeness.
    keywords: list[str] = Field(default_factory=list)
    # Words or phrases that rule this intent out whatever else was said: "cancel" for booking, so a
    # cancellation can never be taken as a booking.
    excludes: list[str] = Field(default_factory=list)
    # Slots the action needs before it is proposed; the agent asks with `ask` while one is missing.
    needs: list[Slot] = Field(default_factory=list)
    ask: str | None = None
    # An action with consequences: spoken as a yes/no question, and done only after a yes.
    confirm: str | None = None
    declined_reply: str = "All right, I will not do that. How else can I help?"
    reply: str | None = None
    tool: ToolCall | None = None
    reply_after_tool: str | None = None


class TransferOffer(BaseModel):
    """What the agent offers when it cannot answer: a transfer, asked as a yes/no question."""

    model_config = ConfigDict(extra="forbid")
    confirm: str = (
        "I am sorry, I do not have that information. "
        "Shall I transfer you to a colleague? Please say yes or no."
    )
    reply: str | None = None
    tool: ToolCall | None = None
    reply_after_tool: str | None = None
    # Spoken instead when the transfer tool is not offered in this session.
    no_transfer_reply: str = "I am sorry, I do not have that information."


class Dialogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Words callers of this profile are likely to say, given to the recogniser as context ("previous
    # text" for Whisper), e.g. the practice's name and its services. Optional; ~100 tokens at most.
    asr_prompt: str | None = None
    # Nothing intelligible was heard.
    fallback_reply: str = "Sorry, I did not catch that."
    # Spoken when a tool's function_call_output says {"ok": false, "error": ...}; {error} is substituted.
    tool_failed_reply: str = "Sorry, that did not work: {error}."
    # Two intents fit about equally well: ask which ({options} is "A, or B").
    clarify_reply: str = "Sorry, I want to be sure: did you want to {options}?"
    # A pending yes/no question got neither: ask it again ({question} is the question).
    yes_no_reply: str = "Sorry, was that a yes or a no? {question}"
    # Something was heard, but it is neither a known request nor answered by the knowledge.
    out_of_scope: TransferOffer = Field(default_factory=TransferOffer)
    intents: list[Intent] = Field(default_factory=list)


class Fact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str
    answer: str


class Faq(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str


class Knowledge(BaseModel):
    """What the agent may answer from: facts ("Parking: ..." strings or topic/answer pairs), FAQ entries,
    and free text (answered sentence by sentence). Nothing outside it (and the instructions' facts) is
    ever said as an answer."""

    model_config = ConfigDict(extra="forbid")
    facts: list[Fact | str] = Field(default_factory=list)
    faq: list[Faq] = Field(default_factory=list)
    text: str = ""


class EngineProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    greeting: str | None = None
    voice: str | None = None
    instructions: str = ""
    dialogue: Dialogue = Field(default_factory=Dialogue)
    knowledge: Knowledge = Field(default_factory=Knowledge)


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
