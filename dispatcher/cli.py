"""`dispatcher`: operate the Kamailio edge's worker pool (status, drain, enable, add, remove).

Exit codes (scripts and Ansible rely on them):
    0  done
    1  refused: unknown worker, invalid URI or list, Kamailio answered an error, unsafe removal
    2  usage error (argparse)
    3  Kamailio JSON-RPC unreachable
    4  a worker's event socket unreachable (status: at least one; drain --wait: at the start)
    5  timed out: drain --wait with calls left, enable with probes still failing
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from dispatcher.control import DispatcherError, DrainTimeout, EdgeControl, NotActiveInTime, WorkerStatus
from dispatcher.esl import WorkerUnreachable
from dispatcher.listfile import ListError
from dispatcher.rpc import KamailioRefused, KamailioRpc, KamailioUnreachable
from dispatcher.settings import DispatcherSettings

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_KAMAILIO, EXIT_WORKER, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatcher", description=__doc__.split("\n\n")[0],
                                epilog="Settings: DISPATCHER_* environment variables (docs/dispatcher.md).")
    p.add_argument("--rpc-url", help="Kamailio JSON-RPC: unix:/path or http://host:port/RPC "
                   "(DISPATCHER_RPC_URL, default unix:/run/kamailio/kamailio_rpc.sock)")
    p.add_argument("--list-file", type=Path, help="dispatcher.list Kamailio loads (DISPATCHER_LIST_FILE)")
    p.add_argument("--setid", type=int, help="dispatcher set of the workers (DISPATCHER_SETID)")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("status", help="every worker: dispatcher state, probing, active calls")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--no-esl", action="store_true", help="do not ask the workers for their call counts")

    d = sub.add_parser("drain", help="send no new call to WORKER; optionally wait for its calls to end")
    d.add_argument("worker", help="worker id (duid), URI, or host:port")
    d.add_argument("--wait", action="store_true", help="wait until FreeSWITCH reports zero calls")
    d.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits (default %(default)s)")

    e = sub.add_parser("enable", help="take WORKER back into rotation once its OPTIONS probe succeeds")
    e.add_argument("worker")
    e.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for 'active'")
    e.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for 'active'")

    a = sub.add_parser("add", help="add a worker to dispatcher.list and reload Kamailio")
    a.add_argument("uri", help="sip:host[:port][;transport=udp|tcp|tls]")
    a.add_argument("--duid", required=True, help="worker id (also its name for drain/enable/ESL)")
    a.add_argument("--priority", type=int, default=0)
    a.add_argument("--attrs", default="", help="extra attrs, e.g. 'maxload=400;weight=50;esl=10.0.0.13:8021'")

    r = sub.add_parser("remove", help="remove a (drained) worker from dispatcher.list and reload Kamailio")
    r.add_argument("worker")
    r.add_argument("--force", action="store_true", help="remove even if it is not drained")
    return p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _table(workers: list[WorkerStatus]) -> str:
    rows = [("WORKER", "URI", "STATE", "PROBING", "FLAGS", "LOAD", "CALLS")]
    for w in workers:
        if w.active_calls is not None:
            calls = str(w.active_calls)
        elif w.esl_error:
            calls = "unreachable"
        else:
            calls = "-"
        rows.append((w.name, w.uri, w.state, "yes" if w.probing else "no", w.flags,
                     "-" if w.load is None else str(w.load), calls))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


async def _run(args: argparse.Namespace, settings: DispatcherSettings) -> int:
    async with KamailioRpc(settings.rpc_url, timeout=settings.rpc_timeout) as rpc:
        ctl = EdgeControl(settings, rpc)
        if args.verb == "status":
            workers = await ctl.status(with_esl=not args.no_esl)
            if args.json:
                doc = {"setid": settings.setid, "workers": [w.to_json() for w in workers]}
                print(json.dumps(doc, indent=2))
            else:
                print(_table(workers))
            for w in workers:
                if w.esl_error:
                    _say(f"warning: {w.name}: {w.esl_error}")
            return EXIT_WORKER if any(w.esl_error for w in workers) else EXIT_OK

        if args.verb == "drain":
            worker, persisted = await ctl.drain(args.worker)
            where = (f" (persisted in {settings.list_file})" if persisted
                     else " (runtime only: no list file here)")
            _say(f"{worker.name}: drained, no new calls{where}")
            if not args.wait:
                return EXIT_OK
            last: list[int | None] = [-1]

            def progress(calls: int | None, elapsed: float, error: str | None) -> None:
                if error:
                    _say(f"{worker.name}: {elapsed:.0f} s, ESL error ({error}); retrying")
                elif calls != last[0]:
                    _say(f"{worker.name}: {elapsed:.0f} s, {calls} call(s) left")
                    last[0] = calls

            await ctl.wait_drained(worker, args.timeout, progress)
            _say(f"{worker.name}: no calls left, safe to stop")
            return EXIT_OK

        if args.verb == "enable":
            worker, _ = await ctl.enable(args.worker)
            if args.no_wait:
                _say(f"{worker.name}: enabled; active after its next successful OPTIONS probe")
                return EXIT_OK
            await ctl.wait_active(worker, args.timeout)
            _say(f"{worker.name}: active, taking new calls")
            return EXIT_OK

        if args.verb == "add":
            worker = await ctl.add(args.uri, args.duid, priority=args.priority, attrs=args.attrs)
            _say(f"{worker.name}: added as {worker.uri} ({worker.state}); Kamailio reloaded")
            return EXIT_OK

        if args.verb == "remove":
            worker = await ctl.remove(args.worker, force=args.force)
            _say(f"{worker.name}: removed ({worker.uri}); Kamailio reloaded")
            return EXIT_OK
    raise AssertionError(args.verb)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = DispatcherSettings()
    except ValidationError as exc:
        _say(f"error: invalid DISPATCHER_ setting: {exc}")
        return EXIT_USAGE
    overrides = {k: v for k, v in (("rpc_url", args.rpc_url), ("list_file", args.list_file),
                                   ("setid", args.setid)) if v is not None}
    try:
        settings = DispatcherSettings.model_validate(settings.model_dump() | overrides)
    except ValidationError as exc:
        _say(f"error: invalid setting: {exc}")
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, settings))
    except KamailioUnreachable as exc:
        _say(f"error: {exc}")
        return EXIT_KAMAILIO
    except WorkerUnreachable as exc:
        _say(f"error: {exc}")
        return EXIT_WORKER
    except (DrainTimeout, NotActiveInTime) as exc:
        _say(f"error: {exc}")
        return EXIT_TIMEOUT
    except DispatcherError as exc:
        _say(f"error: {exc}")
        return EXIT_REFUSED
    except (KamailioRefused, ListError, OSError) as exc:
        _say(f"error: {exc}")
        return EXIT_REFUSED
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
