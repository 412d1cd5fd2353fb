"""ESL parser and client cost: how much CPU the gateway spends per FreeSWITCH event and per command.

    .venv/bin/python benchmarks/esl.py [--seconds 3]

1. Parser: the captured call-event sessions (plain and JSON, ~18-20 KB, 10 frames each) fed in the chunk
   sizes FreeSWITCH actually used, repeated for --seconds of CPU time; reports events/s and MB/s per core.
2. Client: api() round trips and file-mode play-event fan-out against the loopback fake FreeSWITCH
   (tests/fakes), measured as CPU-seconds of this process per 1,000 operations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.freeswitch_esl import FakeFreeSwitch, read_fixture  # noqa: E402

from gateway.esl.client import EslClient  # noqa: E402
from gateway.esl.protocol import EslParser, Event  # noqa: E402


def bench_parser(name: str, seconds: float) -> dict[str, float]:
    data = read_fixture(name)
    timeline = json.loads(read_fixture("esl_timelines.json"))[name.removesuffix(".fs.bin")]
    chunks, pos = [], 0
    for _, direction, size in timeline:
        if direction == "S>C":
            chunks.append(data[pos:pos + size])
            pos += size
    rounds = events = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        parser = EslParser()
        for chunk in chunks:
            events += sum(isinstance(m, Event) for m in parser.feed(chunk))
        rounds += 1
    cpu = time.process_time() - start
    return {"events_per_cpu_s": events / cpu, "mb_per_cpu_s": rounds * len(data) / cpu / 1e6,
            "us_per_event": cpu / events * 1e6}


async def bench_client(n: int) -> dict[str, float]:
    fs = await FakeFreeSwitch().start()
    uuid = "6cb13cce-643b-4f1c-ae2c-d0fa60be795a"
    client = EslClient(fs.host, fs.port, fs.password)
    await client.connect()
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await client.api("show calls count")
        api_cpu = time.process_time() - c0
        api_wall = time.perf_counter() - t0
        got = 0
        done = asyncio.Event()

        def on_play(event: Event) -> None:
            nonlocal got
            got += 1
            if got == n:
                done.set()

        client.subscribe(on_play, uuid)
        body = '{"audioDataType":"raw","sampleRate":8000,"file":"/tmp/x_1.tmp.r8"}'
        c0 = time.process_time()
        for _ in range(n):
            await fs.emit(uuid, "CUSTOM", subclass="mod_audio_stream::play", body=body)
        await asyncio.wait_for(done.wait(), 60)
        play_cpu = time.process_time() - c0  # includes the fake's own serialisation (same process)
    finally:
        await client.close()
        await fs.close()
    return {"api_round_trip_ms": api_wall / n * 1e3, "api_cpu_ms_per_1000": api_cpu / n * 1e6,
            "play_event_cpu_ms_per_1000_incl_fake": play_cpu / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="CPU seconds per parser measurement")
    ap.add_argument("--ops", type=int, default=2000, help="client operations per measurement")
    args = ap.parse_args()
    for name in ("esl_events_plain_call_upstream.fs.bin", "esl_events_json_call_upstream.fs.bin"):
        r = bench_parser(name, args.seconds)
        print(f"parser {name}: {r['events_per_cpu_s']:,.0f} events/CPU-s, {r['mb_per_cpu_s']:.1f} MB/CPU-s, "
              f"{r['us_per_event']:.1f} us/event")
    r = asyncio.run(bench_client(args.ops))
    print(f"client api round trip (loopback fake, same process): {r['api_round_trip_ms']:.3f} ms; "
          f"{r['api_cpu_ms_per_1000']:.0f} CPU-ms per 1000 api calls (client + fake)")
    print(f"play events (~3.2 KB JSON each) parsed and fanned out: "
          f"{r['play_event_cpu_ms_per_1000_incl_fake']:.0f} CPU-ms per 1000 (client + fake serialising)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
