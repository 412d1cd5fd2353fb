"""`loadtest` command line: `sip` (SIPp against an edge or worker), `media` (the gateway's media
plane), `worker` (a SIPp FreeSWITCH stand-in), `scenarios` (list or copy the shipped SIPp
scenarios), `report` (re-render a report.json).

Exit codes: 0 pass, 1 a threshold broke, 2 bad arguments or profile, 3 the load generator could
not run (sipp missing, socket bind error, gateway unreachable before any call).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from loadtest import SCENARIO_DIR
from loadtest.verdict import EXIT_TOOL, EXIT_USAGE

log = logging.getLogger("loadtest")


def _default_out(kind: str) -> Path:
    return Path("loadtest-runs") / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{kind}"


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"rates must be comma-separated numbers: {text!r}") from exc


def _add_threshold_args(p: argparse.ArgumentParser, *, sip: bool) -> None:
    g = p.add_argument_group("thresholds (pass/fail; 'none' disables one)")
    g.add_argument("--max-failed-ratio", type=_opt_float, help="failed calls / attempted (default 0.001)")
    if sip:
        g.add_argument("--max-setup-p95-ms", type=_opt_float, help="INVITE->200 p95 (default 500)")
        g.add_argument("--max-setup-p99-ms", type=_opt_float, help="INVITE->200 p99 (default 1000)")
        g.add_argument("--max-retrans-ratio", type=_opt_float, help="retransmissions / calls (default 0.01)")
        g.add_argument("--min-rate-ratio", type=_opt_float, help="achieved / target rate (default 0.8)")


def _opt_float(text: str) -> float | None:
    if text.lower() in ("none", "off", "-"):
        return None
    return float(text)


_UNSET = object()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sip = sub.add_parser("sip", help="SIP load test with sipp (one rate, a ramp, or --find-capacity)",
                         argument_default=argparse.SUPPRESS)
    sip.add_argument("--profile", dest="profile_file", help="YAML/JSON profile; flags override it")
    sip.add_argument("--target", help="host:port of the edge (or worker) under test")
    sip.add_argument("--scenario", help="shipped scenario name (see `loadtest scenarios`) or XML path")
    sip.add_argument("--transport", choices=["udp", "tcp", "udp-per-call", "tcp-per-call"])
    sip.add_argument("--rate", type=float, help="calls per second (default 10)")
    sip.add_argument("--ramp", dest="rate_steps", type=_rates, help="rate steps, e.g. 10,20,40")
    sip.add_argument("--step-duration", dest="step_duration_s", type=float, help="seconds per ramp step")
    sip.add_argument("--calls", type=int, help="total calls (single rate)")
    sip.add_argument("--duration", dest="duration_s", type=float, help="seconds of sending (single rate)")
    sip.add_argument("--max-concurrent", type=int, help="cap on simultaneous calls (sipp -l)")
    sip.add_argument("--hold-ms", type=int, help="call hold time after the ACK (default 3000)")
    sip.add_argument("--local-ip", help="address sipp binds (default 127.0.0.1)")
    sip.add_argument("--media-ip", help="RTP address (default: --local-ip)")
    sip.add_argument("--inf", help="-inf CSV (caller;dialled;CallSid;hold_ms); default: generated")
    sip.add_argument("--dialled", help="dialled number in the generated CSV")
    sip.add_argument("--question", help="text spoken (espeak-ng) as the caller's audio")
    sip.add_argument("--audio", help="headerless 8 kHz mu-law file instead of --question")
    sip.add_argument("--sipp-arg", dest="extra_args", action="append", help="extra sipp argument (repeat)")
    sip.add_argument("--peak-concurrent", type=int, help="production peak concurrent calls (2x rule)")
    sip.add_argument("--peak-cps", type=float, help="production peak calls/s (2x rule)")
    sip.add_argument("--grace", dest="grace_s", type=float, help="seconds allowed for calls to finish")
    _add_threshold_args(sip, sip=True)
    cap = sip.add_argument_group("capacity search")
    cap.add_argument("--find-capacity", action="store_true", help="step the rate up until a threshold breaks")
    cap.add_argument("--start-rate", type=float, help="first rate (default 10)")
    cap.add_argument("--rate-factor", type=float, help="multiply the rate by this per step (default 2)")
    cap.add_argument("--max-rate", type=float, help="stop here even if nothing broke (default 1000)")
    cap.add_argument("--refine", type=int, help="bisection steps after the first failure (default 2)")
    sip.add_argument("--watch-pid", dest="watch", action="append", metavar="NAME=PID",
                     help="also record CPU/RSS of a local process under test, e.g. kamailio=1234 (repeat)")
    sip.add_argument("--out", help="run directory (default loadtest-runs/<time>-sip)")
    sip.add_argument("--quiet", action="store_true", help="no live progress line")

    media = sub.add_parser("media", help="media-plane load against a running `gateway serve`")
    media.add_argument("--url", required=True, help="gateway stream base URL, e.g. ws://127.0.0.1:8090")
    media.add_argument("--calls", type=int, default=24, help="total simulated calls (default 24)")
    media.add_argument("--concurrency", type=int, default=12, help="calls in flight at once (default 12)")
    media.add_argument("--rate", type=float, default=4.0, help="new calls per second (default 4)")
    media.add_argument("--sample-rate", type=int, choices=[8000, 16000], default=8000)
    media.add_argument("--processes", type=int, default=1,
                       help="generator processes sharing the calls (when one process's CPU is the limit)")
    media.add_argument("--question", help="text spoken (espeak-ng) by every caller")
    media.add_argument("--audio", help="WAV file instead of --question")
    media.add_argument("--model", choices=["engine", "null-echo"], default="engine",
                       help="what the gateway is configured to talk to (GATEWAY_MODEL_BACKEND): the "
                       "embedded engine or OpenAI ('engine'), or its null-echo backend")
    media.add_argument("--profile-name", default="", help="agent profile put in the stream metadata")
    media.add_argument("--token", help="bearer token for the gateway")
    media.add_argument("--protocol", choices=["freeswitch", "twilio"], default="freeswitch",
                       help="speak as mod_audio_stream (default) or as Twilio Media Streams")
    media.add_argument("--twilio-auth-token", help="auth token that signs the upgrade (--protocol twilio)")
    media.add_argument("--call-timeout", type=float, default=60.0, help="seconds before a call is failed")
    media.add_argument("--ready-url", help="wait for this to answer 200 first, e.g. http://gw:8091/readyz")
    media.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for --ready-url")
    media.add_argument("--gateway-pid", type=int,
                       help="pid of the gateway for CPU/memory (default: found from the --url port)")
    media.add_argument("--engine-pid", type=int, help="also measure the embedded engine (`gateway model`)")
    media.add_argument("--engine-port", type=int, help="find the engine's pid from its listening port")
    media.add_argument("--max-failed-ratio", type=_opt_float, default=0.0)
    media.add_argument("--max-reply-p95-ms", type=_opt_float, default=3000.0,
                       help="end of speech -> first reply audio, p95 (default 3000)")
    media.add_argument("--max-jitter-p95-ms", type=_opt_float, default=60.0,
                       help="playout jitter of returned audio, p95 (default 60)")
    media.add_argument("--out", help="run directory (default loadtest-runs/<time>-media)")
    media.add_argument("--quiet", action="store_true")

    wk = sub.add_parser("worker", help="run a SIPp worker stand-in (answers, echoes RTP) in the foreground")
    wk.add_argument("--listen", required=True, help="host:port to answer on, e.g. 127.0.0.11:5080")
    wk.add_argument("--scenario", default="uas-worker-echo",
                    help="uas-worker-echo (default), uas-worker-503, uas-worker-ringing-until-cancel")
    wk.add_argument("--media-port", type=int, help="RTP echo port (default: a free even port)")
    wk.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    wk.add_argument("--duration", type=float, default=3600.0, help="stop after this many seconds")

    sc = sub.add_parser("scenarios", help="list the shipped SIPp scenarios or copy them out")
    sc.add_argument("--copy", metavar="DIR", help="copy every scenario and the example CSV into DIR")

    rep = sub.add_parser("report", help="re-render report.md and charts from a report.json")
    rep.add_argument("report_json")
    return parser


def _sip_profile(args: argparse.Namespace):
    from loadtest.profile import Profile, load_profile_file

    given = vars(args).copy()
    data: dict = load_profile_file(given.pop("profile_file")) if "profile_file" in given else {}
    thresholds = dict(data.get("thresholds") or {})
    for key in ("max_failed_ratio", "max_setup_p95_ms", "max_setup_p99_ms", "max_retrans_ratio",
                "min_rate_ratio"):
        if key in given:
            thresholds[key] = given.pop(key)
    if thresholds:
        data["thresholds"] = thresholds
    run_keys = {"find_capacity", "start_rate", "rate_factor", "max_rate", "refine", "out", "quiet", "command",
                "watch"}
    run_opts = {k: given.pop(k) for k in list(given) if k in run_keys}
    data.update(given)
    if run_opts.get("find_capacity"):
        # every capacity step sends for step_duration_s at its own rate
        data.pop("calls", None)
        data.pop("rate_steps", None)
        data["duration_s"] = data.get("step_duration_s", 10.0)
    return Profile.model_validate(data), run_opts


def _cmd_sip(args: argparse.Namespace) -> int:
    from loadtest.report import write_reports
    from loadtest.sip_load import run_sip
    from loadtest.sipp import SippNotFound, stderr_progress

    try:
        profile, opts = _sip_profile(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"loadtest sip: invalid profile: {exc}", file=sys.stderr)
        return EXIT_USAGE
    search_ok = (opts.get("rate_factor", 2.0) > 1 and opts.get("start_rate", 10.0) > 0
                 and 0 <= opts.get("refine", 2) <= 10)
    if opts.get("find_capacity") and not search_ok:
        print("loadtest sip: --find-capacity needs --rate-factor > 1, --start-rate > 0, --refine 0..10",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        watch = {k: int(v) for k, _, v in (w.partition("=") for w in opts.get("watch") or [])}
    except ValueError:
        print("loadtest sip: --watch-pid wants NAME=PID", file=sys.stderr)
        return EXIT_USAGE
    out = Path(opts.get("out") or _default_out("sip"))
    progress = None if opts.get("quiet") else stderr_progress()
    try:
        result = asyncio.run(run_sip(
            profile, out, find_capacity=bool(opts.get("find_capacity")),
            start_rate=opts.get("start_rate", 10.0), factor=opts.get("rate_factor", 2.0),
            max_rate=opts.get("max_rate", 1000.0), refine=opts.get("refine", 2), progress=progress,
            watch=watch))
    except SippNotFound as exc:
        print(f"loadtest sip: {exc}", file=sys.stderr)
        return EXIT_TOOL
    paths = write_reports(result, out)
    print(result.verdict)
    print(f"report: {paths['markdown']}  json: {paths['json']}  charts: {out}/*.png")
    return result.exit_code


def _cmd_media(args: argparse.Namespace) -> int:
    from loadtest.media import MediaLoad, run_media_cli

    try:
        load = MediaLoad(url=args.url, calls=args.calls, concurrency=args.concurrency, rate=args.rate,
                         sample_rate=args.sample_rate, question=args.question, audio=args.audio,
                         model=args.model, processes=args.processes,
                         profile_name=args.profile_name, token=args.token, call_timeout_s=args.call_timeout,
                         protocol=args.protocol, twilio_auth_token=args.twilio_auth_token,
                         ready_url=args.ready_url, ready_timeout_s=args.ready_timeout,
                         gateway_pid=args.gateway_pid, engine_pid=args.engine_pid,
                         engine_port=args.engine_port, max_failed_ratio=args.max_failed_ratio,
                         max_reply_p95_ms=args.max_reply_p95_ms, max_jitter_p95_ms=args.max_jitter_p95_ms)
    except (ValidationError, ValueError) as exc:
        print(f"loadtest media: invalid settings: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_media_cli(load, Path(args.out or _default_out("media")), quiet=args.quiet)


def _cmd_scenarios(args: argparse.Namespace) -> int:
    import xml.etree.ElementTree as ET

    files = sorted(SCENARIO_DIR.glob("*.xml")) + sorted(SCENARIO_DIR.glob("*.csv"))
    if args.copy:
        dest = Path(args.copy)
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, dest / f.name)
        print(f"copied {len(files)} files to {dest}")
        return 0
    for f in files:
        if f.suffix == ".xml":
            comment = ""
            text = f.read_text(errors="replace")
            if "<!--" in text:
                comment = text.split("<!--", 1)[1].split("-->", 1)[0].strip().splitlines()[0].strip()
            ET.parse(f)  # refuse to list a broken file silently
            print(f"{f.stem:36s} {comment}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from loadtest import scenario_path
    from loadtest.ports import free_udp_port
    from loadtest.sipp import SippNotFound, sipp_binary

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print("loadtest worker: --listen wants host:port", file=sys.stderr)
        return EXIT_USAGE
    try:
        sipp = sipp_binary()
        scenario = scenario_path(args.scenario)
    except (SippNotFound, FileNotFoundError) as exc:
        print(f"loadtest worker: {exc}", file=sys.stderr)
        return EXIT_TOOL if isinstance(exc, SippNotFound) else EXIT_USAGE
    media = args.media_port or free_udp_port(host, span=2, step=2, even=True)
    transport = "u1" if args.transport == "udp" else "t1"
    cmd = [sipp, "-sf", str(scenario), "-t", transport, "-i", host, "-p", port, "-mp", str(media),
           "-rtp_echo", "-aa", "-timeout", f"{int(args.duration)}s", "-trace_stat",
           "-stf", f"worker-{port}.csv", "-fd", "5"]
    print(" ".join(cmd), file=sys.stderr)
    sys.stderr.flush()
    # become sipp: signals (Ctrl-C, SIGTERM from a supervisor) reach it directly, no orphan is left
    os.execv(sipp, cmd)
    return EXIT_TOOL  # not reached


def _cmd_report(args: argparse.Namespace) -> int:
    from loadtest.report import load_json, write_charts, write_markdown

    path = Path(args.report_json)
    result = load_json(path)
    charts = write_charts(result, path.parent)
    print(write_markdown(result, path.parent, charts))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    handlers = {"sip": _cmd_sip, "media": _cmd_media, "worker": _cmd_worker, "scenarios": _cmd_scenarios,
                "report": _cmd_report}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
