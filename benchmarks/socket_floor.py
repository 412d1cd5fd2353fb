"""The kernel's share of a frame: CPU per small WebSocket-sized message written to / read from a loopback
TCP socket, on uvloop, with one message per socket per loop turn (as 20 ms frames of many calls arrive),
every socket written once per `--interval-ms` (20: a frame per call per 20 ms), no Python work besides the
write and the read. What any user-space media plane pays per frame before it
does anything; docs/benchmarks.md sets it against the per-call budget of 1,000 calls per core.

    .venv/bin/python benchmarks/socket_floor.py --sockets 1000 --turns 250 --size 240 --host 127.0.3.9

The writer and the reader are separate processes pinned to cores 1 and 0 (taskset); each reports its own
CPU (user + sys) per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reader(host: str, sockets: int, total: int) -> None:
    import uvloop

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            stats["bytes"] += len(data)
            stats["reads"] += 1
            if stats["bytes"] >= total and not done.done():
                done.set_result(None)

    async def main() -> None:
        global done
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        srv = await loop.create_server(Sink, host, 0, backlog=4096)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(0)
        sys.stdin.readline()  # the writer is connected: measure from here
        c0, t0 = cpu(), time.perf_counter()
        await done
        c1, t1 = cpu(), time.perf_counter()
        print(json.dumps({"reader_cpu_s": round(c1 - c0, 3), "reads": stats["reads"],
                          "wall_s": round(t1 - t0, 2)}), flush=True)

    stats = {"bytes": 0, "reads": 0}
    uvloop.run(main())


def writer(host: str, port: int, sockets: int, turns: int, size: int, interval: float) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for _ in range(sockets):
            tr, _ = await loop.create_connection(asyncio.Protocol, host, port)
            tr.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transports.append(tr)
        print("READY", flush=True)
        sys.stdin.readline()
        msg = b"x" * size
        c0 = cpu()
        next_turn = loop.time()
        for _ in range(turns):
            for tr in transports:
                tr.write(msg)
            next_turn += interval
            await asyncio.sleep(max(0.0, next_turn - loop.time()))
        c1 = cpu()
        print(json.dumps({"writer_cpu_s": round(c1 - c0, 3)}), flush=True)
        await asyncio.sleep(1.0)

    uvloop.run(main())


def main() -> int:
    if sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if sys.argv[1:2] == ["--writer"]:
        writer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
               float(sys.argv[7]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=200)
    p.add_argument("--turns", type=int, default=1000)
    p.add_argument("--size", type=int, default=240, help="bytes per message (20 ms of μ-law in JSON: ~240)")
    p.add_argument("--interval-ms", type=float, default=20.0,
                   help="one message per socket every this often (0: as fast as the writer can)")
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    n = a.sockets * a.turns
    rd = subprocess.Popen(["taskset", "-c", "0", sys.executable, __file__, "--reader", a.host, str(a.sockets),
                           str(n * a.size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert rd.stdin is not None and rd.stdout is not None
    port = rd.stdout.readline().strip()
    wr = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--writer", a.host, port,
                           str(a.sockets), str(a.turns), str(a.size), str(a.interval_ms / 1000)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert wr.stdin is not None and wr.stdout is not None
    try:
        assert wr.stdout.readline().strip() == "READY"
        rd.stdin.write("\n")
        rd.stdin.flush()
        wr.stdin.write("\n")
        wr.stdin.flush()
        w = json.loads(wr.stdout.readline())
        r = json.loads(rd.stdout.readline())
    finally:
        for proc in (wr, rd):
            proc.kill()
            proc.wait()
    out = {"messages": n, "size": a.size, "sockets": a.sockets, "interval_ms": a.interval_ms,
           "writer_us_per_message": round(w["writer_cpu_s"] / n * 1e6, 2),
           "reader_us_per_message": round(r["reader_cpu_s"] / n * 1e6, 2),
           "messages_per_read": round(n / r["reads"], 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
