"""`loadtest sip`: run a profile (one rate, a ramp, or --find-capacity) and judge it."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from loadtest.model import RunResult, StepResult
from loadtest.ports import free_udp_port
from loadtest.procstat import samplers_for
from loadtest.profile import MAX_RATE_CPS, MAX_STEPS, Profile
from loadtest.sipp import (
    ProgressFn,
    build_command,
    collect_step,
    prepare_step_dir,
    run_sipp,
    sipp_binary,
)
from loadtest.verdict import EXIT_PASS, EXIT_THRESHOLD, EXIT_TOOL, broken, capacity_of, evaluate_sip_step


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_info() -> dict:
    info = {"hostname": platform.node(), "cpus": _cpus(), "python": platform.python_version()}
    try:
        out = subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True, timeout=10).stdout
        info["sipp"] = next((ln.strip() for ln in out.splitlines() if "SIPp v" in ln), out.strip()[:80])
    except Exception:  # noqa: BLE001 - version is informative only
        pass
    return info


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


async def run_step(profile: Profile, rate: float, index: int, run_dir: Path, run_start: float,
                   progress: ProgressFn | None) -> StepResult:
    label = f"step {index} {rate:g} cps"
    step_dir = run_dir / f"step-{index:02d}-{rate:g}cps"
    # small local file work (CSV, audio copy, parsing) stays synchronous on purpose: only the /proc
    # samplers share this event loop, and a late sample costs nothing
    files = prepare_step_dir(profile, rate, step_dir, run_dir / "question.ulaw")
    media_port = free_udp_port(profile.media_ip or profile.local_ip, span=2, step=2, even=True)
    cmd = build_command(profile, rate, step_dir, files, local_port=free_udp_port(profile.local_ip),
                        media_port=media_port)
    _write_text(step_dir / "command.txt", " ".join(cmd) + "\n")
    code = await run_sipp(cmd, step_dir, timeout_s=profile.step_timeout_s(rate) + 5, label=label,
                          progress=progress)
    step = collect_step(step_dir, index=index, label=label, target_rate=rate,
                        requested=profile.calls_for(rate), exit_code=code, run_start=run_start, command=cmd)
    return evaluate_sip_step(step, profile.thresholds)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def capacity_rates(start: float, factor: float, max_rate: float) -> list[float]:
    rates, rate = [], start
    while rate <= max_rate + 1e-9 and len(rates) < MAX_STEPS:
        rates.append(round(rate, 3))
        rate *= factor
    return rates


async def run_sip(profile: Profile, run_dir: Path, *, find_capacity: bool = False, start_rate: float = 10.0,
                  factor: float = 2.0, max_rate: float = 1000.0, refine: int = 2,
                  progress: ProgressFn | None = None, watch: dict[str, int] | None = None) -> RunResult:
    """Run every step; with find_capacity, step the rate up by `factor` until a threshold breaks,
    then bisect `refine` times between the last passing and the first failing rate."""
    _mkdir(run_dir)
    run_start = time.time()
    settings = profile.model_dump()
    if find_capacity:
        settings["find_capacity"] = {"start_rate": start_rate, "factor": factor, "max_rate": max_rate,
                                     "refine": refine}
    result = RunResult(kind="sip", title=f"SIP load test of {profile.target} ({Path(profile.scenario).stem})",
                       started=now_iso(), host=host_info(), settings=settings)
    max_rate = min(max_rate, MAX_RATE_CPS)
    # processes under test on this host (Kamailio main pid, a FreeSWITCH pid...): CPU and RSS from /proc,
    # children included, so Kamailio's worker processes count
    samplers, notes = samplers_for(watch or {})
    result.resources.update(notes)
    sampler_tasks = [asyncio.create_task(s.run()) for s in samplers.values()]
    try:
        await _run_steps(profile, run_dir, result, run_start, find_capacity=find_capacity,
                         start_rate=start_rate, factor=factor, max_rate=max_rate, refine=refine,
                         progress=progress)
    finally:
        for task in sampler_tasks:
            task.cancel()
        await asyncio.gather(*sampler_tasks, return_exceptions=True)
    calls = sum(s.attempted for s in result.steps)
    for name, sampler in samplers.items():
        summary = sampler.summary()
        summary["cpu_ms_per_call"] = round(1000 * summary["cpu_seconds"] / max(1, calls), 3)
        result.resources[name] = summary
    finish = getattr(progress, "finish", None)
    if finish:
        finish()
    result.finished = now_iso()
    judge(result)
    return result


async def _run_steps(profile: Profile, run_dir: Path, result: RunResult, run_start: float, *,
                     find_capacity: bool, start_rate: float, factor: float, max_rate: float, refine: int,
                     progress: ProgressFn | None) -> None:
    index = 0
    if not find_capacity:
        for rate in profile.step_rates():
            index += 1
            step = await run_step(profile, rate, index, run_dir, run_start, progress)
            result.steps.append(step)
    else:
        last_pass: float | None = None
        first_fail: float | None = None
        for rate in capacity_rates(start_rate, factor, max_rate):
            index += 1
            step = await run_step(profile, rate, index, run_dir, run_start, progress)
            result.steps.append(step)
            if not step.passed:
                first_fail = rate
                break
            last_pass = rate
        for _ in range(refine if first_fail is not None and last_pass is not None else 0):
            mid = round((last_pass + first_fail) / 2, 3)
            if mid <= last_pass or mid >= first_fail or index >= MAX_STEPS:
                break
            index += 1
            step = await run_step(profile, mid, index, run_dir, run_start, progress)
            result.steps.append(step)
            if step.passed:
                last_pass = mid
            else:
                first_fail = mid
        result.capacity = capacity_of(result.steps, profile.peak_concurrent, profile.peak_cps)


def judge(result: RunResult) -> RunResult:
    """Overall verdict and exit code from the steps (and capacity, if it was searched)."""
    tool_broken = [s for s in result.steps if s.exit_code in (254, 255) and s.attempted == 0]
    if tool_broken:
        result.passed = False
        result.exit_code = EXIT_TOOL
        result.verdict = (f"FAIL: the load generator could not run ({tool_broken[0].exit_meaning}); "
                          f"see {Path(tool_broken[0].files.get('stat', '')).parent}/stdout.log")
        return result
    if result.capacity is not None:
        cap = result.capacity
        if cap.highest_passing_rate is None:
            result.passed = False
            result.verdict = f"FAIL: even the first rate broke a threshold ({'; '.join(cap.broke_on)})"
        elif cap.passes_2x_peak is False:
            result.passed = False
            result.verdict = (f"FAIL: capacity {cap.highest_passing_rate:g} calls/s "
                              f"({cap.concurrent_at_highest} concurrent) is below 2x peak: {cap.detail}")
        else:
            result.passed = True
            limit = (f"; first failing rate {cap.first_failing_rate:g} calls/s ({'; '.join(cap.broke_on)})"
                     if cap.first_failing_rate else "; no threshold broke up to the maximum rate tried")
            rule = (f"; passes 2x peak: {cap.detail}" if cap.passes_2x_peak
                    else f"; 2x peak rule not evaluated: {cap.detail}")
            result.verdict = (f"PASS: highest passing rate {cap.highest_passing_rate:g} calls/s with "
                              f"{cap.concurrent_at_highest} concurrent calls{limit}{rule}")
    else:
        failing = [s for s in result.steps if not s.passed]
        result.passed = not failing and bool(result.steps)
        if result.passed:
            result.verdict = f"PASS: all {len(result.steps)} step(s) within thresholds"
        else:
            first = failing[0]
            result.verdict = f"FAIL: {first.label}: {'; '.join(broken(first))}"
    result.exit_code = EXIT_PASS if result.passed else EXIT_THRESHOLD
    return result
