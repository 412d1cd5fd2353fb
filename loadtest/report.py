"""Reports: report.json (the RunResult as it is), report.md (for a change ticket), PNG charts.

Charts use matplotlib's Agg backend (no display needed): calls per second, concurrent calls,
failures and retransmissions, and the response-time distribution over time (every sample as a
dot, with per-second p50/p95/p99 lines).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from loadtest.model import RunResult, StepResult  # noqa: E402
from loadtest.sippstat import percentile  # noqa: E402

CHART_NAMES = ("calls_per_s", "concurrent", "failures", "response_time")


def write_json(result: RunResult, out_dir: Path) -> Path:
    path = out_dir / "report.json"
    path.write_text(result.model_dump_json(indent=2))
    return path


def load_json(path: Path) -> RunResult:
    return RunResult.model_validate_json(Path(path).read_text())


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return f"{value:g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def write_markdown(result: RunResult, out_dir: Path, charts: dict[str, Path]) -> Path:
    media = result.kind == "media"
    latency_name = "end of speech -> first audio (ms)" if media else "setup INVITE->200 (ms)"
    lines = [f"# {result.title}", "", f"**{result.verdict}**", "",
             f"- started {result.started}, finished {result.finished}",
             f"- host: {result.host.get('hostname', '?')}, {result.host.get('cpus', '?')} CPUs"
             + (f", {result.host['sipp']}" if result.host.get("sipp") else ""),
             f"- exit code {result.exit_code} "
             "(0 pass, 1 threshold broken, 2 usage error, 3 load generator failure)", ""]
    if result.capacity is not None:
        cap = result.capacity
        rule = {True: "PASS", False: "FAIL", None: "not evaluated"}[cap.passes_2x_peak]
        lines += ["## Capacity", "",
                  f"- highest passing rate: {_fmt(cap.highest_passing_rate)} calls/s "
                  f"with {_fmt(cap.concurrent_at_highest)} concurrent calls",
                  f"- first failing rate: {_fmt(cap.first_failing_rate)} calls/s"
                  + (f" ({'; '.join(cap.broke_on)})" if cap.broke_on else ""),
                  f"- 2x peak rule: {rule} ({cap.detail})", ""]
    head = ("| step | target | attempted | ok | failed | unfinished | failed % | retrans | achieved/s "
            f"| peak conc. | {latency_name} p50 / p95 / p99 / max | verdict |")
    lines += ["## Steps", "", head, "|" + "---|" * 12]
    for s in result.steps:
        lat = s.setup_ms
        lines.append(
            f"| {s.label} | {_fmt(s.target_rate)} | {s.attempted} | {s.successful} | {s.failed} "
            f"| {s.unfinished} | {_ratio(s.failed_ratio)} | {s.retransmissions} | {_fmt(s.achieved_rate)} "
            f"| {s.peak_concurrent} "
            f"| {_fmt(lat.p50)} / {_fmt(lat.p95)} / {_fmt(lat.p99)} / {_fmt(lat.max)} "
            f"| {'pass' if s.passed else 'FAIL'} |")
    lines.append("")
    for s in result.steps:
        lines += [f"### {s.label}", ""]
        for c in s.checks:
            lines.append(f"- {'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
        for name, lat in (("per-frame echo latency (ms)", s.frame_latency_ms),
                          ("playout jitter of returned audio (ms)", s.jitter_ms)):
            if lat is not None and lat.count:
                lines.append(f"- {name}: p50 {_fmt(lat.p50)} / p95 {_fmt(lat.p95)} / p99 {_fmt(lat.p99)} "
                             f"/ max {_fmt(lat.max)} over {lat.count} samples")
        if s.failures:
            lines.append("- failure counters: " + ", ".join(f"{k} {v}" for k, v in s.failures.items()))
        if s.errors:
            lines.append("- errors: " + "; ".join(f"{k} x{v}" for k, v in s.errors.items()))
        for key, value in s.extra.items():
            if key in ("response_time_buckets",) or isinstance(value, list | dict):
                continue
            shown = _fmt(value, 3) if isinstance(value, float) else value
            lines.append(f"- {key.replace('_', ' ')}: {shown}")
        if s.command:
            lines += ["", "```", " ".join(s.command), "```"]
        lines.append("")
    if result.resources:
        lines += ["## Resources of the processes under test (from /proc)", ""]
        for name, res in result.resources.items():
            if not isinstance(res, dict):
                lines.append(f"- {name}: {res}")
                continue
            shown = ", ".join(f"{k.replace('_', ' ')} {_fmt(v, 2) if isinstance(v, float) else v}"
                              for k, v in res.items() if not isinstance(v, list | dict))
            lines.append(f"- {name}: {shown}")
        lines.append("")
    if charts:
        lines += ["## Charts", ""]
        lines += [f"![{name}]({path.name})" for name, path in charts.items()]
        lines.append("")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _step_edges(ax, steps: list[StepResult]) -> None:
    for s in steps[1:]:
        ax.axvline(s.started_at, color="0.8", linewidth=0.8, zorder=0)


def write_charts(result: RunResult, out_dir: Path) -> dict[str, Path]:
    media = result.kind == "media"
    steps = result.steps
    pts = [p for s in steps for p in s.series]
    t = [p.t for p in pts]
    charts: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        charts[name] = path

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, [p.calls_per_s for p in pts], label="calls started per second", color="tab:blue")
    for s in steps:
        if s.target_rate and s.series:
            ax.hlines(s.target_rate, s.started_at, s.started_at + max(s.duration_s, 1), colors="tab:gray",
                      linestyles="dashed", label="target" if s is steps[0] else None)
    _step_edges(ax, steps)
    ax.set(xlabel="seconds since start", ylabel="calls/s", title="Call rate")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save(fig, "calls_per_s")

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(t, [p.concurrent for p in pts], color="tab:green")
    _step_edges(ax, steps)
    ax.set(xlabel="seconds since start", ylabel="calls", title="Concurrent calls")
    ax.grid(alpha=0.3)
    save(fig, "concurrent")

    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8
    ax.bar(t, [p.failed for p in pts], width=width, color="tab:red", label="failed calls")
    if not media:
        ax.plot(t, [p.retransmissions for p in pts], color="tab:orange", marker=".", label="retransmissions")
    cumulative, total = [], 0
    for p in pts:
        total += p.failed
        cumulative.append(total)
    ax.plot(t, cumulative, color="darkred", linestyle="dotted", label="failed (cumulative)")
    _step_edges(ax, steps)
    ax.set(xlabel="seconds since start", ylabel="count per interval", title="Failures")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    save(fig, "failures")

    fig, ax = plt.subplots(figsize=(9, 3.5))
    samples = [xy for s in steps for xy in s.samples]
    if samples:
        ax.scatter([x for x, _ in samples], [y for _, y in samples], s=6, alpha=0.4, color="tab:purple",
                   label="each call")
        bins: dict[int, list[float]] = {}
        for x, y in samples:
            bins.setdefault(math.floor(x), []).append(y)
        xs = sorted(bins)
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            ax.plot([x + 0.5 for x in xs], [percentile(bins[x], q) for x in xs], linestyle=style,
                    color="black", label=f"p{q} per second")
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center")
    _step_edges(ax, steps)
    what = "end of speech -> first reply audio" if media else "call setup INVITE -> 200"
    ax.set(xlabel="seconds since start", ylabel="ms", title=f"Response time ({what})")
    ax.grid(alpha=0.3)
    save(fig, "response_time")

    watched = {name: res["series"] for name, res in result.resources.items()
               if isinstance(res, dict) and res.get("series")}
    if watched:
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
        for name, series in watched.items():
            ax.plot([x[0] for x in series], [x[1] for x in series], label=name)
            ax2.plot([x[0] for x in series], [x[2] for x in series], label=name)
        ax.set(ylabel="CPU % (100 = 1 core)", title="Processes under test: CPU and memory (/proc)")
        ax2.set(xlabel="seconds since start", ylabel="RSS MB")
        for a in (ax, ax2):
            a.legend(loc="upper left")
            a.grid(alpha=0.3)
        save(fig, "resources")
    return charts


def write_reports(result: RunResult, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(result, out_dir)
    md = write_markdown(result, out_dir, charts)
    js = write_json(result, out_dir)
    return {"json": js, "markdown": md, **charts}
