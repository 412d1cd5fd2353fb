"""Agent profiles: YAML files in `GATEWAY_PROFILES_DIR`, one agent each, selected per call.

The gateway reads every key but `dialogue` (which only the embedded engine uses). Selection order:
the `profile` named in the stream metadata, then the dialled number (`callee`) listed in a profile's
`numbers`, then the default profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.call.policy import TransferAllow
from gateway.call.tools import TOOLS, unknown_tools
from gateway.handoff.routing import HandoffPolicy
from gateway.outbound.amd import AmdConfig
from gateway.outbound.schedule import OnCall, Schedule
from gateway.records.policy import RecordsPolicy


class ProfileError(Exception):
    """A profile file that cannot be used; the message names the file and the field."""


class TurnDetection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(0.5, ge=0, le=1)
    prefix_padding_ms: int = Field(300, ge=0)
    silence_duration_ms: int = Field(500, ge=0)
    interrupt_response: bool = True


class Fallback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = "Sorry, we are having technical difficulties. Please call again later."
    action: Literal["hangup", "transfer"] = "hangup"
    target: str | None = None


class Profile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    description: str = ""
    numbers: list[str] = Field(default_factory=list)
    instructions: str
    voice: str = "marin"
    greeting: str | None = None
    turn_detection: TurnDetection = Field(default_factory=TurnDetection)
    tools: list[str] = Field(default_factory=list)
    transfer_targets: dict[str, str] = Field(default_factory=dict)
    escalation_target: str | None = None
    # Operator allow-list for targets not named in transfer_targets (gateway/call/policy.py); empty =
    # only named targets.
    transfer_allow: TransferAllow = Field(default_factory=TransferAllow)
    fallback: Fallback = Field(default_factory=Fallback)
    records: RecordsPolicy = Field(default_factory=RecordsPolicy)  # storage, redaction, memory, retention
    # Business hours and the after-hours on-call ladder (gateway/outbound/schedule.py, docs/outbound.md).
    schedule: Schedule | None = None
    on_call: OnCall | None = None
    amd: AmdConfig | None = None  # answering-machine detection on outbound calls (gateway/outbound/amd.py)
    handoff: HandoffPolicy | None = None  # how `escalate` hands the caller to a human (docs/handoff.md)
    # Listens and transcribes, never speaks (the handoff note-taker): its model's audio is dropped.
    listen_only: bool = False

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: list[str]) -> list[str]:
        unknown = unknown_tools(tools)
        if unknown:
            raise ValueError(f"unknown tools {unknown}; known: {sorted(TOOLS)}")
        return tools

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_as_strings(cls, v: Any) -> Any:
        return [str(n) for n in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _fallback_target(self) -> Profile:
        if self.fallback.action == "transfer" and not self.fallback.target:
            raise ValueError("fallback.action transfer needs fallback.target")
        return self

    @model_validator(mode="after")
    def _handoff_targets(self) -> Profile:
        if self.handoff is not None:
            unknown = [t.target for t in self.handoff.targets if self.resolve_target(t.target) is None]
            if unknown:
                raise ValueError(f"handoff.targets {unknown} are not names in transfer_targets")
        return self

    def resolve_target(self, name: str) -> str | None:
        """A transfer target name from the model -> FreeSWITCH destination (names only, never raw)."""
        return self.transfer_targets.get(name.strip().lower()) or self.transfer_targets.get(name.strip())


class ProfileSet:
    def __init__(self, profiles: dict[str, Profile], default: str) -> None:
        if default not in profiles:
            raise ProfileError(f"default profile {default!r} not found (have: {sorted(profiles)})")
        self.profiles = profiles
        self.default = default
        self._by_number = {num: p for p in profiles.values() for num in p.numbers}

    def select(self, profile: str = "", callee: str = "") -> Profile:
        if profile and profile in self.profiles:
            return self.profiles[profile]
        if callee:
            bare = callee.split("@", 1)[0].removeprefix("sip:")
            for key in (callee, bare):
                if key in self._by_number:
                    return self._by_number[key]
        return self.profiles[self.default]


def read_profile_file(path: Path) -> dict[str, Any]:
    """One profile file as a mapping, `name` defaulting to the file's stem. The gateway and the embedded
    engine each validate their own part of it, but read it the same way."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a mapping")
    data.setdefault("name", path.stem)
    return data


def load_profile(path: Path) -> Profile:
    try:
        return Profile.model_validate(read_profile_file(path))
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{path}: {fields}") from None


def load_profiles(directory: Path, default: str) -> ProfileSet:
    profiles: dict[str, Profile] = {}
    files = sorted(Path(directory).glob("*.yaml")) + sorted(Path(directory).glob("*.yml"))
    if not files:
        raise ProfileError(f"no profile files (*.yaml) in {directory}")
    for path in files:
        profile = load_profile(path)
        if profile.name in profiles:
            raise ProfileError(f"{path}: duplicate profile name {profile.name!r}")
        profiles[profile.name] = profile
    return ProfileSet(profiles, default)
