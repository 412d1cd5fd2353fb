"""`gateway dial`: place outbound calls through a running gateway's admin API.

    gateway dial +15550100 --profile sales --var customer="Ada Lovelace" --wait
    gateway dial --csv campaign.csv --results results.csv

One number: POST /calls, print the call object (with --wait, poll until it ends and print the final
one; the exit status is 0 for completed, 1 otherwise). A campaign (--csv): every row is one call; the
columns `to` (required), `profile`, `caller_id`, `priority`, `timezone`, `max_attempts` are the call's,
every other column becomes a custom variable of the agent session. All rows are submitted at once; the
gateway's per-tenant cap, queue, CPS limit, calling hours and retries pace them. A live progress line
shows the states; the results file gets one row per input row.

The admin API URL and token come from --url / --token or GATEWAY_ADMIN_URL / GATEWAY_ADMIN_TOKEN (the
secret part of a `control` token; a tenant's token dials for that tenant).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import httpx

CALL_COLUMNS = ("to", "profile", "caller_id", "priority", "timezone", "max_attempts")
RESULT_COLUMNS = ("row", "to", "id", "state", "sip_status", "hangup_cause", "attempts", "answered_at",
                  "ended_at", "reason")
FINAL = {"completed", "busy", "no_answer", "failed", "refused", "canceled"}
MAX_ROWS = 100_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway dial", description=__doc__.splitlines()[0])
    p.add_argument("number", nargs="?", help="the number to call (or use --csv)")
    p.add_argument("--csv", type=Path, help="campaign: one call per row (column `to` required)")
    p.add_argument("--results", type=Path, help="campaign results CSV (default: <csv>.results.csv)")
    p.add_argument("--profile")
    p.add_argument("--caller-id")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--timezone")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--ring-timeout", type=int)
    p.add_argument("--via", choices=["sip", "twilio"], default="sip")
    p.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="custom variable")
    p.add_argument("--wait", action="store_true", help="single call: wait until it ends")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this many seconds")
    p.add_argument("--url", default=os.environ.get("GATEWAY_ADMIN_URL", "http://127.0.0.1:8091"))
    p.add_argument("--token", default=os.environ.get("GATEWAY_ADMIN_TOKEN", ""))
    return p


class Api:
    def __init__(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=15)

    def dial(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        r = self.client.post("/calls", json=body)
        try:
            doc = r.json()
        except ValueError:
            doc = {"detail": r.text[:200]}
        return r.status_code, doc

    def get(self, call_id: str) -> dict[str, Any] | None:
        r = self.client.get(f"/calls/{call_id}")
        return r.json() if r.status_code == 200 else None


def _body(row: dict[str, str], defaults: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"to": (row.get("to") or "").strip(), "via": defaults.via}
    for key, value in (("profile", defaults.profile), ("caller_id", defaults.caller_id),
                       ("timezone", defaults.timezone)):
        value = (row.get(key) or "").strip() or value
        if value:
            body[key] = value
    priority = (row.get("priority") or "").strip()
    body["priority"] = int(priority) if priority else defaults.priority
    attempts = (row.get("max_attempts") or "").strip()
    if attempts or defaults.max_attempts:
        body["max_attempts"] = int(attempts) if attempts else defaults.max_attempts
    if defaults.ring_timeout:
        body["ring_timeout_s"] = defaults.ring_timeout
    variables = dict(v.split("=", 1) for v in defaults.var)
    variables.update({k: v for k, v in row.items() if k and k not in CALL_COLUMNS and v not in (None, "")})
    if variables:
        body["variables"] = variables
    return body


class Progress:
    """One live status line on a terminal (rewritten in place), a line every few seconds otherwise."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out = total, out
        self.tty = out.isatty()
        self._last = 0.0
        self._width = 0

    def show(self, states: Counter[str], force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self._last < 5:
            return
        self._last = now
        done = sum(n for s, n in states.items() if s in FINAL)
        width = 30
        filled = int(width * done / self.total) if self.total else width
        detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}  {detail}"
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")


def campaign(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    with args.csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) > MAX_ROWS:
        print(f"gateway dial: at most {MAX_ROWS} rows per campaign", file=sys.stderr)
        return 2
    if rows and "to" not in rows[0]:
        print("gateway dial: the CSV needs a `to` column", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for i, row in enumerate(rows, start=1):
        status, doc = api.dial(_body(row, args))
        if status == 202:
            results.append({"row": i, "to": doc["to"], "id": doc["id"], "state": doc["state"]})
        else:
            results.append({"row": i, "to": row.get("to", ""), "id": "", "state": "refused",
                            "reason": f"HTTP {status}: {doc.get('detail', '')}"})
    progress = Progress(len(results), out)
    deadline = time.monotonic() + args.timeout
    while True:
        for r in results:
            if r["id"] and r["state"] not in FINAL:
                info = api.get(r["id"])
                if info is not None:
                    r.update({"state": info["state"], "sip_status": info.get("sip_status"),
                              "hangup_cause": info.get("hangup_cause"), "attempts": info.get("attempt"),
                              "answered_at": info.get("answered_at"), "ended_at": info.get("ended_at"),
                              "reason": info.get("reason")})
        states = Counter(r["state"] for r in results)
        progress.show(states)
        if all(r["state"] in FINAL for r in results) or time.monotonic() >= deadline:
            break
        time.sleep(args.poll)
    progress.show(Counter(r["state"] for r in results), force=True)
    progress.end()
    path = args.results or args.csv.with_suffix(".results.csv")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    print(f"results: {path}", file=out)
    return 0 if all(r["state"] in FINAL for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if bool(args.number) == bool(args.csv):
        print("gateway dial: give one number or --csv FILE", file=sys.stderr)
        return 2
    if any("=" not in v for v in args.var):
        print("gateway dial: --var takes NAME=VALUE", file=sys.stderr)
        return 2
    api = Api(args.url, args.token)
    try:
        if args.csv:
            return campaign(api, args, sys.stdout)
        status, doc = api.dial(_body({"to": args.number}, args))
        if status != 202:
            print(f"gateway dial: refused (HTTP {status}): {doc.get('detail', doc)}", file=sys.stderr)
            return 1
        if args.wait:
            deadline = time.monotonic() + args.timeout
            while doc.get("state") not in FINAL and time.monotonic() < deadline:
                time.sleep(args.poll)
                doc = api.get(doc["id"]) or doc
        print(json.dumps(doc, indent=2))
        return 0 if not args.wait or doc.get("state") == "completed" else 1
    except httpx.HTTPError as exc:
        print(f"gateway dial: cannot reach the admin API at {args.url}: {exc}", file=sys.stderr)
        return 1
