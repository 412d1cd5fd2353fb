"""Load-test profiles: what to run, how hard, for how long, and what counts as a pass.

A profile comes from the command line or a YAML/JSON file (command-line flags override the file).
Every run is bounded: a total call count or a duration is required, rates, counts and times have
hard upper limits, and sipp always gets `-m` and `-timeout`, so a run always stops by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loadtest.audio import DEFAULT_QUESTION

# SIPp -t modes: one socket for all calls (u1/t1) or one per call (un/tn).  TLS is absent from the
# Debian sipp build ("To use a TLS transport you must compile SIPp with OpenSSL").
TRANSPORTS = {"udp": "u1", "tcp": "t1", "udp-per-call": "un", "tcp-per-call": "tn"}

MAX_RATE_CPS = 10_000.0
MAX_CALLS = 1_000_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENT = 100_000
MAX_STEPS = 30


class Thresholds(BaseModel):
    """Limits that decide pass/fail.  None disables a check."""

    model_config = ConfigDict(extra="forbid")

    max_failed_ratio: float | None = Field(0.001, ge=0, le=1,
                                           description="failed calls / attempted calls")
    max_setup_p95_ms: float | None = Field(500.0, gt=0, description="INVITE -> 200 OK, 95th percentile")
    max_setup_p99_ms: float | None = Field(1000.0, gt=0, description="INVITE -> 200 OK, 99th percentile")
    max_retrans_ratio: float | None = Field(0.01, ge=0,
                                            description="SIP retransmissions / attempted calls")
    min_rate_ratio: float | None = Field(0.8, ge=0, le=1,
                                         description="achieved call rate / target rate (SIPp kept up)")


class Profile(BaseModel):
    """One `loadtest sip` run.  `rate_steps` (a ramp) runs each rate for `step_duration_s`."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="host:port of the edge (or a worker) under test")
    scenario: str = Field("uac-speech-expect-200", description="shipped scenario name or XML path")
    transport: Literal["udp", "tcp", "udp-per-call", "tcp-per-call"] = "udp"
    rate: float = Field(10.0, gt=0, le=MAX_RATE_CPS, description="calls per second")
    rate_steps: list[float] | None = Field(None, description="ramp: one step per rate, in order")
    step_duration_s: float = Field(10.0, gt=0, le=MAX_DURATION_S)
    calls: int | None = Field(None, gt=0, le=MAX_CALLS, description="total calls (single-rate run)")
    duration_s: float | None = Field(None, gt=0, le=MAX_DURATION_S, description="sending time (single-rate)")
    max_concurrent: int | None = Field(None, gt=0, le=MAX_CONCURRENT, description="sipp -l")
    hold_ms: int = Field(3000, ge=0, le=3_600_000, description="call hold time after the ACK (sipp -d)")
    local_ip: str = "127.0.0.1"
    media_ip: str | None = None
    inf: str | None = Field(None, description="-inf CSV; default: generated callers with X-Twilio-CallSid")
    dialled: str = Field("+18005550100", description="dialled number in the generated CSV")
    question: str = Field(DEFAULT_QUESTION, description="spoken by espeak-ng for rtp_stream")
    audio: str | None = Field(None, description="headerless 8 kHz mu-law file instead of `question`")
    extra_args: list[str] = Field(default_factory=list, description="passed to sipp as they are")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    peak_concurrent: int | None = Field(None, gt=0, description="production peak, for the 2x rule")
    peak_cps: float | None = Field(None, gt=0, description="production peak call rate, for the 2x rule")
    grace_s: float = Field(30.0, ge=1, le=600, description="extra time for the last calls to finish")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"target must be host:port, got {value!r}")
        return value

    @field_validator("inf", "audio")
    @classmethod
    def _exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, value: str) -> str:
        from loadtest import scenario_path

        if not (value.endswith(".xml") and Path(value).is_file()):
            try:
                scenario_path(value)
            except FileNotFoundError as exc:  # its message lists the shipped scenarios
                raise ValueError(str(exc)) from None
        return value

    @field_validator("rate_steps")
    @classmethod
    def _steps(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not 0 < len(value) <= MAX_STEPS:
            raise ValueError(f"rate_steps needs 1..{MAX_STEPS} rates")
        if any(not 0 < r <= MAX_RATE_CPS for r in value):
            raise ValueError(f"every rate step must be in (0, {MAX_RATE_CPS}]")
        return value

    @model_validator(mode="after")
    def _bounded(self) -> Profile:
        if self.rate_steps is None and self.calls is None and self.duration_s is None:
            raise ValueError("a run needs `calls` or `duration_s` (or `rate_steps`): it must stop by itself")
        for rate in self.step_rates():
            if self.calls_for(rate) > MAX_CALLS:
                raise ValueError(f"{rate} cps for this long exceeds {MAX_CALLS} calls")
        return self

    @property
    def sipp_transport(self) -> str:
        return TRANSPORTS[self.transport]

    def step_rates(self) -> list[float]:
        return list(self.rate_steps) if self.rate_steps else [self.rate]

    def calls_for(self, rate: float) -> int:
        """Calls one step places: explicit `calls`, else rate x duration (at least one)."""
        if self.rate_steps is None and self.calls is not None:
            return self.calls
        seconds = self.duration_s if (self.rate_steps is None and self.duration_s) else self.step_duration_s
        return max(1, round(rate * seconds))

    def step_timeout_s(self, rate: float) -> float:
        """Hard bound on one sipp run: sending time + hold + grace."""
        return self.calls_for(rate) / rate + self.hold_ms / 1000 + self.grace_s


def load_profile_file(path: str | Path) -> dict:
    """Read a YAML (or JSON, which is YAML) profile file into a dict; refuses anything but a mapping."""
    data = yaml.safe_load(Path(path).read_text())
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile file must be a mapping of settings")
    return data
