"""Record-store benchmark: does writing records stall audio? The same media-plane load with the store
off and on (SQLite WAL, then PostgreSQL when `--pg` is given), everything else equal.

    .venv/bin/python benchmarks/records_store.py --calls 300 --seconds 10
    .venv/bin/python benchmarks/records_store.py --calls 300 --seconds 10 --pg   # adds a PostgreSQL run

Load: benchmarks/media_plane.py's client (a mod_audio_stream stand-in, 320-byte L16 frames every 20 ms
per call, server pinned to core 0, client to core 1) against `gateway serve` with the null-echo model.
The null model says nothing, so this script's `--server` mode runs the real gateway and, in its own
event loop, hands every call a caller transcript and an agent transcript every `--turn-every` seconds
through the call's real dispatch path (`CallSession.dispatch`): redaction on the event loop, the
recorder, the writer task and the store's thread all run as on a live call. Transcripts carry a phone
number, an address and a card number, so the redaction detectors do real work.

Reported per run: underruns counted by the gateway's playout clock, inter-arrival of returned audio
at the client (p50/p99/max), server CPU, record ops written/dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CALLER_SAID = (
    "Hi, this is Maria, call me back at 415-555-0132, I live at 12 Main Street, card 4111 1111 1111 1111"
)
AGENT_SAID = "Thank you Maria, I have noted your callback number and will call you back within the hour."


def _server(turn_every_s: float) -> None:
    """`gateway serve` as run_server does it, plus the transcript feeder."""
    import uvloop

    from gateway.log import setup_logging
    from gateway.serve import Gateway
    from gateway.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level)

    async def main() -> None:
        gw = Gateway(settings)
        await gw.start()
        n = 0
        try:
            while True:
                await asyncio.sleep(0.02)
                calls = list(gw.registry.calls.values())
                if not calls:
                    continue
                # Spread the turns: each 20 ms tick serves the calls whose slot comes up.
                slots = max(1, int(turn_every_s / 0.02))
                tick = n % slots
                n += 1
                for i, session in enumerate(calls):
                    if i % slots != tick or session.state != "active":
                        continue
                    session.dispatch(
                        {
                            "type": "conversation.item.input_audio_transcription.completed",
                            "item_id": f"in_{n}_{i}",
                            "content_index": 0,
                            "transcript": CALLER_SAID,
                        }
                    )
                    session.dispatch(
                        {
                            "type": "response.output_audio_transcript.done",
                            "item_id": f"out_{n}_{i}",
                            "response_id": "r",
                            "output_index": 0,
                            "content_index": 0,
                            "transcript": AGENT_SAID,
                        }
                    )
        finally:
            await gw.shutdown(drain_timeout=1)

    uvloop.run(main())


def _count_turns(url: str) -> int:
    from gateway.records.store import open_store

    store = open_store(url)
    try:
        return int(store._run(lambda cur: (cur.execute("SELECT COUNT(*) FROM turns"), cur.fetchone())[1][0]))
    finally:
        store.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--server":
        _server(float(sys.argv[2]))
        return 0
    import media_plane as mp

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--turn-every", type=float, default=2.0, help="seconds between turn pairs per call")
    p.add_argument("--pg", action="store_true", help="also run against a PostgreSQL server (tests/records)")
    p.add_argument("--stores", nargs="+", default=["off", "sqlite"], help="off, sqlite (postgres with --pg)")
    p.add_argument("--nice", type=int, default=0, help="server and client nice level (root may go < 0)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.nice:
        mp.NICE[:] = ["nice", "-n", str(args.nice)]
    results: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_1m_before": os.getloadavg()[0],
        "runs": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="records-bench-"))
    stores = [(n, u) for n, u in (("off", ""), ("sqlite", f"sqlite:///{tmp}/records.db")) if n in args.stores]
    pg_ctx = None
    if args.pg:
        sys.path.insert(0, str(mp.ROOT / "tests" / "records"))
        from pg_server import postgres_server

        pg_ctx = postgres_server()
        stores.append(("postgres", pg_ctx.__enter__()))
    try:
        for name, url in stores:
            port, admin = mp.free_port(), mp.free_port()
            env = {
                **os.environ,
                "GATEWAY_MODEL_BACKEND": "null-echo",
                "GATEWAY_MEDIA_HOST": "127.0.0.1",
                "GATEWAY_MEDIA_PORT": str(port),
                "GATEWAY_ADMIN_PORT": str(admin),
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_AUTH_TOKENS": "",
                "GATEWAY_SHUTDOWN_TIMEOUT_S": "1",
                "GATEWAY_RECORDS_URL": url,
            }
            r = mp.run_load(
                [sys.executable, __file__, "--server", str(args.turn_every)],
                env,
                port,
                args.calls,
                args.warmup,
                args.seconds,
                "/stream/",
                admin_port=admin,
            )
            if url:
                r["turns_in_store"] = _count_turns(url)
            results["runs"][name] = r
            print(f"store {name}, {args.calls} calls: {json.dumps(r)}", flush=True)
    finally:
        if pg_ctx is not None:
            pg_ctx.__exit__(None, None, None)
    results["loadavg_1m_after"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
