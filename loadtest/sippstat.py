"""Parsers for SIPp 3.6.1 output files (sans-I/O: text in, typed rows out).

`-trace_stat` CSV: 95 `;`-separated columns, each line ends with `;` (so a CSV reader sees 96 fields),
and the three time columns hold `date<TAB>time<TAB>epoch` -- a tab/whitespace-splitting reader
breaks on them.  Durations are `HH:MM:SS:uuuuuu`, ElapsedTime is `HH:MM:SS`.  The repartition
blocks have a label column with an empty value followed by one column per bucket
(`ResponseTimeRepartition1_<10` ... `_>=200`).  Rows appear every `-fd` seconds plus a final one.

`-trace_rtt` CSV: `Date_ms;response_time_ms;rtd_no`, one row per response-time sample, Date_ms
being milliseconds since sipp started, response_time_ms an integer (1 ms resolution).

Rows that do not parse are counted and skipped, never fatal: a run killed mid-write leaves a
truncated last line, and one bad line must not lose the whole run's figures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# SIPp's failure counters, in the order of the stat file (each has (P) and (C) columns).
FAILURE_COUNTERS = (
    "FailedCannotSendMessage", "FailedMaxUDPRetrans", "FailedTcpConnect", "FailedTcpClosed",
    "FailedUnexpectedMessage", "FailedCallRejected", "FailedCmdNotSent", "FailedRegexpDoesntMatch",
    "FailedRegexpShouldntMatch", "FailedRegexpHdrNotFound", "FailedOutboundCongestion",
    "FailedTimeoutOnRecv", "FailedTimeoutOnSend", "FailedTestDoesntMatch", "FailedTestShouldntMatch",
    "FailedStrcmpDoesntMatch", "FailedStrcmpShouldntMatch",
)

_DURATION = re.compile(r"^(\d+):(\d{2}):(\d{2})(?::(\d{1,6}))?$")
_BUCKET = re.compile(r"^(ResponseTimeRepartition\d*|CallLengthRepartition)_(<|>=)(\d+)$")


class StatFormatError(ValueError):
    """The file is not a SIPp -trace_stat CSV (no recognisable header)."""


def parse_duration(text: str) -> float:
    """`HH:MM:SS[:uuuuuu]` -> seconds.  Raises ValueError on anything else."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"not a SIPp duration: {text!r}")
    hours, minutes, seconds, micro = m.groups()
    fraction = int(micro.ljust(6, "0")) / 1e6 if micro else 0.0
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + fraction


def parse_timestamp(text: str) -> float:
    """`2026-11-21<TAB>05:37:33.327019<TAB>1795239453.327019` -> the epoch seconds (last part)."""
    parts = text.split()
    if not parts:
        raise ValueError("empty timestamp")
    return float(parts[-1])


@dataclass(frozen=True)
class Bucket:
    """One repartition bucket: `upper_ms` is exclusive; the last bucket has upper_ms None (>= lower)."""

    lower_ms: int
    upper_ms: int | None
    count: int


@dataclass
class StatRow:
    """One line of the -trace_stat file, typed.  (P) = since the previous line, (C) = cumulative."""

    current_time: float
    start_time: float
    elapsed_c: float
    target_rate: float
    call_rate_p: float
    call_rate_c: float
    incoming_c: int
    outgoing_c: int
    outgoing_p: int
    total_created: int
    current_calls: int
    successful_p: int
    successful_c: int
    failed_p: int
    failed_c: int
    retransmissions_p: int
    retransmissions_c: int
    auto_answered_c: int
    dead_call_msgs_c: int
    out_of_call_msgs_c: int
    fatal_errors_c: int
    response_time_p: float
    response_time_c: float
    call_length_c: float
    failures_c: dict[str, int] = field(default_factory=dict)
    failures_p: dict[str, int] = field(default_factory=dict)
    response_time_buckets: list[Bucket] = field(default_factory=list)
    call_length_buckets: list[Bucket] = field(default_factory=list)


@dataclass
class StatFile:
    rows: list[StatRow]
    columns: list[str]
    skipped_lines: int = 0

    @property
    def final(self) -> StatRow | None:
        return self.rows[-1] if self.rows else None


def _split(line: str) -> list[str]:
    fields = line.rstrip("\r\n").split(";")
    if fields and fields[-1] == "":
        fields.pop()  # every line ends with ';'
    return fields


def _buckets(values: dict[str, str], prefix: str) -> list[Bucket]:
    out: list[tuple[int, int | None, int]] = []
    lower = 0
    for name, raw in values.items():
        m = _BUCKET.match(name)
        if m is None or m.group(1) != prefix:
            continue
        limit = int(m.group(3))
        count = int(raw) if raw.strip() else 0
        if m.group(2) == "<":
            out.append((lower, limit, count))
            lower = limit
        else:
            out.append((limit, None, count))
    return [Bucket(lo, hi, c) for lo, hi, c in out]


def _row(values: dict[str, str]) -> StatRow:
    def i(name: str) -> int:
        raw = values.get(name, "").strip()
        return int(float(raw)) if raw else 0

    def f(name: str) -> float:
        raw = values.get(name, "").strip()
        return float(raw) if raw else 0.0

    def d(name: str) -> float:
        raw = values.get(name, "").strip()
        return parse_duration(raw) if raw else 0.0

    matches = (m for m in map(_BUCKET.match, values) if m)
    rt_prefixes = [m.group(1) for m in matches if m.group(1) != "CallLengthRepartition"]
    rt_prefix = rt_prefixes[0] if rt_prefixes else "ResponseTimeRepartition1"
    return StatRow(
        current_time=parse_timestamp(values["CurrentTime"]),
        start_time=parse_timestamp(values["StartTime"]),
        elapsed_c=d("ElapsedTime(C)"),
        target_rate=f("TargetRate"),
        call_rate_p=f("CallRate(P)"),
        call_rate_c=f("CallRate(C)"),
        incoming_c=i("IncomingCall(C)"),
        outgoing_c=i("OutgoingCall(C)"),
        outgoing_p=i("OutgoingCall(P)"),
        total_created=i("TotalCallCreated"),
        current_calls=i("CurrentCall"),
        successful_p=i("SuccessfulCall(P)"),
        successful_c=i("SuccessfulCall(C)"),
        failed_p=i("FailedCall(P)"),
        failed_c=i("FailedCall(C)"),
        retransmissions_p=i("Retransmissions(P)"),
        retransmissions_c=i("Retransmissions(C)"),
        auto_answered_c=i("AutoAnswered(C)"),
        dead_call_msgs_c=i("DeadCallMsgs(C)"),
        out_of_call_msgs_c=i("OutOfCallMsgs(C)"),
        fatal_errors_c=i("FatalErrors(C)"),
        response_time_p=d("ResponseTime1(P)"),
        response_time_c=d("ResponseTime1(C)"),
        call_length_c=d("CallLength(C)"),
        failures_c={n: i(f"{n}(C)") for n in FAILURE_COUNTERS if i(f"{n}(C)")},
        failures_p={n: i(f"{n}(P)") for n in FAILURE_COUNTERS if i(f"{n}(P)")},
        response_time_buckets=_buckets(values, rt_prefix),
        call_length_buckets=_buckets(values, "CallLengthRepartition"),
    )


def parse_stat_csv(text: str) -> StatFile:
    """Parse a whole -trace_stat file.  Raises StatFormatError if there is no header."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("StartTime;"):
        raise StatFormatError("no SIPp -trace_stat header (first line must start with 'StartTime;')")
    columns = _split(lines[0])
    rows: list[StatRow] = []
    skipped = 0
    for line in lines[1:]:
        fields = _split(line)
        if len(fields) != len(columns):
            skipped += 1
            continue
        try:
            rows.append(_row(dict(zip(columns, fields, strict=True))))
        except (ValueError, KeyError):
            skipped += 1
    return StatFile(rows=rows, columns=columns, skipped_lines=skipped)


@dataclass(frozen=True)
class RttSample:
    at_ms: float        # since sipp started
    response_ms: float
    rtd: int


def parse_rtt_csv(text: str) -> tuple[list[RttSample], int]:
    """Parse a -trace_rtt file -> (samples, skipped line count).  A missing header is tolerated
    because SIPp appends to an existing file on restart."""
    samples: list[RttSample] = []
    skipped = 0
    for line in text.splitlines():
        if not line.strip() or line.startswith("Date_ms"):
            continue
        fields = _split(line)
        try:
            samples.append(RttSample(float(fields[0]), float(fields[1]), int(fields[2])))
        except (ValueError, IndexError):
            skipped += 1
    return samples, skipped


_ERR_ABORT = re.compile(r"Aborting call on unexpected message.*?received '(SIP/2\.0 \d{3}[^\r\n']*|[A-Z]+ )")
# every event starts with "<date>\t<time>\t<epoch>: "; SIPp does not always end an event with a
# newline (retransmission timeouts come back to back on one line), so split on the stamps
_ERR_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}\.\d+\s+\d+\.\d+: ")


def summarize_errors(text: str, limit: int = 20) -> dict[str, int]:
    """Count -trace_err events by kind, e.g. {"unexpected SIP/2.0 503 Service Unavailable": 12}.
    Only the first line of each event is classified; message bodies that follow are ignored."""
    counts: dict[str, int] = {}
    stamps = list(_ERR_STAMP.finditer(text))
    for i, stamp in enumerate(stamps):
        end = stamps[i + 1].start() if i + 1 < len(stamps) else len(text)
        event = text[stamp.end():end]
        abort = _ERR_ABORT.search(event)
        if abort:
            key = "unexpected " + abort.group(1).strip()
        else:
            first_line = event.splitlines()[0] if event.strip() else "(empty event)"
            key = re.sub(r"'[^']*'", "'...'", re.sub(r"\d+", "N", first_line))[:120]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data.  Nearest-rank so a reported p99
    is always a latency that some call actually saw."""
    data = sorted(values)
    if not data:
        return None
    rank = max(1, min(len(data), -(-len(data) * q // 100)))
    return data[int(rank) - 1]
