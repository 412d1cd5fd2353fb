"""Thresholds -> checks -> pass/fail, and the 2x-peak rule (pure functions, no I/O)."""

from __future__ import annotations

from loadtest.model import Capacity, Check, StepResult
from loadtest.profile import Thresholds

EXIT_PASS = 0
EXIT_THRESHOLD = 1     # the system under test broke a threshold
EXIT_USAGE = 2         # bad profile / arguments
EXIT_TOOL = 3          # the load generator itself could not run (sipp missing, bind error, ...)


def _max_check(name: str, value: float | None, limit: float | None, unit: str = "") -> Check | None:
    if limit is None:
        return None
    if value is None:
        return Check(name=name, value=None, limit=limit, passed=False, detail="no data")
    return Check(name=name, value=value, limit=limit, passed=value <= limit,
                 detail=f"{value:.4g}{unit} <= {limit:g}{unit}" if value <= limit
                 else f"{value:.4g}{unit} > {limit:g}{unit}")


def evaluate_sip_step(step: StepResult, th: Thresholds) -> StepResult:
    """Fill step.checks and step.passed.  A step with no attempted calls never passes."""
    checks: list[Check] = []
    if step.attempted == 0:
        checks.append(Check(name="calls attempted", value=0, limit=1, passed=False,
                            detail=f"sipp placed no calls (exit {step.exit_code}: {step.exit_meaning})"))
    for check in (
        _max_check("failed-call ratio", step.failed_ratio, th.max_failed_ratio),
        _max_check("setup time p95", step.setup_ms.p95, th.max_setup_p95_ms, " ms"),
        _max_check("setup time p99", step.setup_ms.p99, th.max_setup_p99_ms, " ms"),
        _max_check("retransmission ratio", step.retrans_ratio, th.max_retrans_ratio),
    ):
        if check is not None:
            checks.append(check)
    if th.min_rate_ratio is not None and step.target_rate and step.requested > 1:
        ratio = (step.achieved_rate or 0.0) / step.target_rate
        checks.append(Check(name="achieved/target rate", value=ratio, limit=th.min_rate_ratio,
                            passed=ratio >= th.min_rate_ratio,
                            detail=f"{step.achieved_rate or 0:.4g} of {step.target_rate:g} calls/s"))
    if step.exit_code in (254, 255):
        checks.append(Check(name="sipp exit", value=step.exit_code, limit=0, passed=False,
                            detail=step.exit_meaning))
    step.checks = checks
    step.passed = all(c.passed for c in checks)
    return step


def broken(step: StepResult) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in step.checks if not c.passed]


def capacity_of(steps: list[StepResult], peak_concurrent: int | None, peak_cps: float | None) -> Capacity:
    """Highest passing rate before the first failing one, and the 2x-peak verdict."""
    cap = Capacity(peak_concurrent=peak_concurrent, peak_cps=peak_cps)
    # walk up by rate: capacity is the highest rate below which everything tested passed
    for step in sorted(steps, key=lambda s: s.target_rate or 0.0):
        if not step.passed:
            cap.first_failing_rate = step.target_rate
            cap.broke_on = broken(step)
            break
        cap.highest_passing_rate = step.target_rate
        cap.concurrent_at_highest = step.peak_concurrent
    if peak_concurrent is None and peak_cps is None:
        cap.detail = "no production peak given (--peak-concurrent / --peak-cps)"
        return cap
    reasons = []
    ok = cap.highest_passing_rate is not None
    if peak_concurrent is not None:
        have = cap.concurrent_at_highest or 0
        ok = ok and have >= 2 * peak_concurrent
        reasons.append(f"{have} concurrent calls passed, 2x peak is {2 * peak_concurrent}")
    if peak_cps is not None:
        have_rate = cap.highest_passing_rate or 0.0
        ok = ok and have_rate >= 2 * peak_cps
        reasons.append(f"{have_rate:g} calls/s passed, 2x peak is {2 * peak_cps:g}")
    cap.passes_2x_peak = ok
    cap.detail = "; ".join(reasons)
    return cap
