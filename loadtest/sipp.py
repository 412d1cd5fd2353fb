"""Run the real `sipp` binary as an asyncio subprocess and turn its files into a StepResult.

One sipp process per step (rate).  Its working directory is the step directory: sipp writes
`-trace_rtt` there under a name of its own (`<scenario>_<pid>_rtt.csv`) and resolves rtp_stream
audio paths against it.  The stat file is re-read every second for the live progress line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loadtest import scenario_path
from loadtest.audio import speak_ulaw
from loadtest.model import Latency, Point, StepResult
from loadtest.profile import Profile
from loadtest.sippstat import StatFormatError, parse_rtt_csv, parse_stat_csv, percentile, summarize_errors

SIPP_EXIT = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command (calls may have been processed)",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}
_RTP_STREAM = re.compile(r'rtp_stream="([^",]+)[,"]')


class SippNotFound(RuntimeError):
    """No sipp binary: Debian package sip-tester."""


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SippNotFound("sipp not found on PATH; install it with: apt-get install -y sip-tester")
    return path


def resolve_scenario(name: str) -> Path:
    path = Path(name)
    return path if path.suffix == ".xml" and path.is_file() else scenario_path(name)


def write_callers_csv(path: Path, rows: int, dialled: str) -> Path:
    """Per-call data for the shipped callers: caller;dialled;X-Twilio-CallSid;hold_ms (empty: -d).
    One row per call up to 10000 (SIPp cycles through the rows after that)."""
    lines = ["SEQUENTIAL", "# caller;dialled;X-Twilio-CallSid;hold_ms"]
    for i in range(rows):
        lines.append(f"+1415{5550000 + i:07d};{dialled};CA{secrets.token_hex(16)};")
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare_step_dir(profile: Profile, rate: float, step_dir: Path, audio_cache: Path) -> dict[str, Path]:
    """Put the scenario's inputs into the step directory: CSV and rtp_stream audio."""
    step_dir.mkdir(parents=True, exist_ok=True)
    scenario = resolve_scenario(profile.scenario)
    text = scenario.read_text(errors="replace")
    files: dict[str, Path] = {"scenario": scenario}
    if "[field" in text:
        if profile.inf:
            files["inf"] = Path(profile.inf).resolve()
        else:
            rows = min(10_000, max(1, profile.calls_for(rate)))
            files["inf"] = write_callers_csv(step_dir / "callers.csv", rows, profile.dialled)
    for name in set(_RTP_STREAM.findall(text)):
        dest = step_dir / name
        if dest.exists() or Path(name).is_absolute():
            continue
        if profile.audio:
            shutil.copyfile(profile.audio, dest)
        else:
            if not audio_cache.exists():
                speak_ulaw(profile.question, audio_cache)
            shutil.copyfile(audio_cache, dest)
        files["audio"] = dest
    return files


def build_command(profile: Profile, rate: float, step_dir: Path, files: dict[str, Path], *,
                  local_port: int, media_port: int) -> list[str]:
    """The sipp command line for one step (pure: no I/O)."""
    calls = profile.calls_for(rate)
    timeout = profile.step_timeout_s(rate)
    cmd = [
        sipp_binary(), profile.target,
        "-sf", str(files["scenario"]),
        "-t", profile.sipp_transport,
        "-i", profile.local_ip, "-p", str(local_port),
        "-mi", profile.media_ip or profile.local_ip, "-mp", str(media_port),
        "-r", f"{rate:g}", "-m", str(calls), "-d", str(profile.hold_ms),
        "-nostdin",
        # Through a multi-process proxy the 200 can overtake the 180 (UDP, different Kamailio children);
        # the late 180 then arrives during the hold, and a real UA ignores it, so the caller does too.
        # Measured: 3 of 4000 calls at 800 calls/s through the edge failed on this without the flag.
        "-pause_msg_ign",
        "-timeout", f"{int(timeout + 0.999)}s", "-timeout_error",
        "-trace_stat", "-stf", str(step_dir / "stat.csv"), "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1",
        "-trace_err", "-error_file", str(step_dir / "err.log"),
        "-trace_screen", "-screen_file", str(step_dir / "screen.log"),
    ]
    if "inf" in files:
        cmd += ["-inf", str(files["inf"])]
    if profile.max_concurrent:
        cmd += ["-l", str(profile.max_concurrent)]
    return cmd + list(profile.extra_args)


def _read_last_row(stat: Path):
    try:
        text = stat.read_text(errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    # the last line may be half written; parse header + last two lines and keep what parses
    try:
        parsed = parse_stat_csv("\n".join([lines[0], *lines[-2:]]))
    except StatFormatError:
        return None
    return parsed.final


ProgressFn = Callable[[str], None]


def stderr_progress() -> ProgressFn:
    """A progress sink: one rewritten line on a terminal, a line every 5 s otherwise (CI logs)."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def emit(line: str) -> None:
        if tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    emit.finish = lambda: (sys.stderr.write("\n"), sys.stderr.flush()) if tty else None  # type: ignore[attr-defined]
    return emit


async def run_sipp(cmd: list[str], step_dir: Path, *, timeout_s: float, label: str,
                   progress: ProgressFn | None = None) -> int:
    """Run sipp to completion; returns its exit code.  Past timeout_s it gets SIGUSR1 (soft quit:
    no new calls), then SIGTERM, then SIGKILL, a few seconds apart."""
    stdout = (step_dir / "stdout.log").open("wb")
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, cwd=step_dir, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=stdout, stderr=asyncio.subprocess.STDOUT)
    finally:
        stdout.close()
    started = time.monotonic()
    stat = step_dir / "stat.csv"
    escalation = [(timeout_s, signal.SIGUSR1), (timeout_s + 5, signal.SIGTERM),
                  (timeout_s + 10, signal.SIGKILL)]
    try:
        while True:
            try:
                return await asyncio.wait_for(proc.wait(), timeout=1.0)
            except TimeoutError:
                pass
            elapsed = time.monotonic() - started
            if progress is not None:
                row = _read_last_row(stat)
                if row is not None:
                    progress(f"[{label}] {elapsed:6.1f}s calls {row.outgoing_c} ok {row.successful_c} "
                             f"failed {row.failed_c} now {row.current_calls} "
                             f"rate {row.call_rate_p:.1f}/s retrans {row.retransmissions_c}")
            while escalation and elapsed >= escalation[0][0]:
                _, sig = escalation.pop(0)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def collect_step(step_dir: Path, *, index: int, label: str, target_rate: float | None, requested: int,
                 exit_code: int | None, run_start: float, command: list[str]) -> StepResult:
    """Parse a step directory into a StepResult (robust: missing files give empty figures)."""
    step = StepResult(index=index, label=label, target_rate=target_rate, requested=requested,
                      exit_code=exit_code, exit_meaning=SIPP_EXIT.get(exit_code, "unknown") if exit_code
                      is not None else "not run", command=command)
    stat_path = step_dir / "stat.csv"
    step.files["stat"] = str(stat_path)
    rows = []
    if stat_path.exists():
        try:
            stat = parse_stat_csv(stat_path.read_text(errors="replace"))
            rows = stat.rows
            if stat.skipped_lines:
                step.extra["stat_lines_skipped"] = stat.skipped_lines
        except StatFormatError as exc:
            step.extra["stat_error"] = str(exc)
    if rows:
        final = rows[-1]
        sipp_start = final.start_time
        step.started_at = sipp_start - run_start
        step.duration_s = final.current_time - sipp_start
        step.attempted = final.outgoing_c or final.incoming_c
        step.successful = final.successful_c
        step.failed = final.failed_c
        step.unfinished = max(0, step.attempted - step.successful - step.failed)
        step.retransmissions = final.retransmissions_c
        step.failures = dict(final.failures_c)
        step.peak_concurrent = max(r.current_calls for r in rows)
        if step.attempted:
            # calls that never finished (killed at the timeout) count as failed for the ratio
            step.failed_ratio = (step.failed + step.unfinished) / step.attempted
            step.retrans_ratio = step.retransmissions / step.attempted
        step.achieved_rate = _achieved_rate(rows)
        prev_t = sipp_start
        for r in rows[1:]:
            dt = max(r.current_time - prev_t, 1e-6)
            step.series.append(Point(
                t=r.current_time - run_start, calls_per_s=r.outgoing_p / dt, concurrent=r.current_calls,
                successful=r.successful_p, failed=r.failed_p, retransmissions=r.retransmissions_p,
                response_ms=r.response_time_p * 1000 if (r.successful_p or r.response_time_p) else None))
            prev_t = r.current_time
        step.extra["call_length_mean_s"] = final.call_length_c
        step.extra["auto_answered"] = final.auto_answered_c
        step.extra["response_time_buckets"] = [b.__dict__ for b in final.response_time_buckets]
    rtt_files = sorted(step_dir.glob("*_rtt.csv"))
    samples: list[tuple[float, float]] = []
    for path in rtt_files:
        parsed, skipped = parse_rtt_csv(path.read_text(errors="replace"))
        step.files.setdefault("rtt", str(path))
        samples += [(step.started_at + s.at_ms / 1000, s.response_ms) for s in parsed if s.rtd == 1]
    step.samples = thin(samples)
    step.setup_ms = latency_of([ms for _, ms in samples])
    if len(samples) >= 2 and len(samples) >= step.attempted // 2:
        # INVITE->200 completions are spaced like the INVITEs themselves (setup time is steady), and
        # unlike the 1 s stat rows they resolve low rates; a throttled sipp (-l) spaces them out
        first, last = min(t for t, _ in samples), max(t for t, _ in samples)
        if last > first:
            step.achieved_rate = (len(samples) - 1) / (last - first)
    err = step_dir / "err.log"
    if err.exists():
        step.files["errors"] = str(err)
        step.errors = summarize_errors(err.read_text(errors="replace"))
        if exit_code == 255 and any("timed out after" in k for k in step.errors):
            # -timeout_error turns the global -timeout into exit -1: calls were still up at the bound
            step.exit_meaning = "global -timeout reached before every call ended"
    return step


MAX_SAMPLES_KEPT = 20_000


def thin(samples: list[tuple[float, float]], keep: int = MAX_SAMPLES_KEPT) -> list[tuple[float, float]]:
    """Every n-th sample, so report.json of an hour-long run stays small; percentiles are always
    computed from all samples before thinning."""
    if len(samples) <= keep:
        return samples
    stride = -(-len(samples) // keep)
    return samples[::stride]


def latency_of(values: list[float]) -> Latency:
    if not values:
        return Latency()
    return Latency(count=len(values), p50=percentile(values, 50), p95=percentile(values, 95),
                   p99=percentile(values, 99), max=max(values), mean=sum(values) / len(values))


def _achieved_rate(rows) -> float | None:
    """Calls attempted / time until the last one was sent, interpolated inside the 1 s interval in
    which the count reached its final value (SIPp writes a row per second, not per call)."""
    final = rows[-1]
    total = final.outgoing_c or final.incoming_c
    if not total:
        return None
    prev_t, prev_c = final.start_time, 0
    for r in rows:
        count = r.outgoing_c or r.incoming_c
        if count >= total:
            span = count - prev_c
            frac = (total - prev_c) / span if span else 1.0
            t_done = prev_t + frac * (r.current_time - prev_t) - final.start_time
            # the first call goes out at t=0, so n calls at rate R take (n-1)/R seconds
            return (total - 1) / t_done if t_done > 0 and total > 1 else None
        prev_t, prev_c = r.current_time, count
    return None
