"""Result model shared by `loadtest sip` and `loadtest media`: steps, time series, verdicts.

Everything here is plain data (pydantic) so report.json is the model dumped as it is, and a report
can be re-rendered from report.json alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Check(BaseModel):
    """One threshold applied to one step: `value` against `limit`."""

    name: str
    value: float | None
    limit: float
    passed: bool
    detail: str = ""


class Point(BaseModel):
    """One time-series sample; `t` is seconds since the start of the whole run."""

    t: float
    calls_per_s: float = 0.0          # new calls in the last interval / interval
    concurrent: float = 0.0
    successful: int = 0               # in the interval
    failed: int = 0                   # in the interval
    retransmissions: int = 0          # in the interval
    response_ms: float | None = None  # SIPp's mean ResponseTime1 over the interval


class Latency(BaseModel):
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None


class StepResult(BaseModel):
    """One sipp run (one rate) or one media load wave."""

    index: int
    label: str
    target_rate: float | None = None
    requested: int
    attempted: int = 0
    successful: int = 0
    failed: int = 0
    unfinished: int = 0
    failed_ratio: float | None = None
    retransmissions: int = 0
    retrans_ratio: float | None = None
    achieved_rate: float | None = None
    peak_concurrent: int = 0
    setup_ms: Latency = Field(default_factory=Latency)   # SIP: INVITE->200; media: end of speech->audio
    frame_latency_ms: Latency | None = None              # media: per-frame echo latency (null-echo model)
    jitter_ms: Latency | None = None                     # media: playout jitter of returned audio
    failures: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, int] = Field(default_factory=dict)
    exit_code: int | None = None
    exit_meaning: str = ""
    started_at: float = 0.0            # seconds since the start of the run
    duration_s: float = 0.0
    series: list[Point] = Field(default_factory=list)
    samples: list[tuple[float, float]] = Field(default_factory=list, description="(t, ms) latency samples")
    checks: list[Check] = Field(default_factory=list)
    passed: bool = False
    files: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class Capacity(BaseModel):
    """--find-capacity outcome and the 2x-peak rule."""

    highest_passing_rate: float | None = None
    concurrent_at_highest: int | None = None
    first_failing_rate: float | None = None
    broke_on: list[str] = Field(default_factory=list)
    peak_concurrent: int | None = None
    peak_cps: float | None = None
    passes_2x_peak: bool | None = None
    detail: str = ""


class RunResult(BaseModel):
    kind: str                          # "sip" | "media"
    title: str
    started: str                       # ISO 8601 UTC
    finished: str = ""
    host: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepResult] = Field(default_factory=list)
    capacity: Capacity | None = None
    passed: bool = False
    verdict: str = ""
    exit_code: int = 0
    resources: dict[str, Any] = Field(default_factory=dict)
