"""FreeSWITCH worker benchmark: calls per FreeSWITCH core with the audio fork active, and first-reply latency
per mod_audio_stream edition with what each hop adds.

    .venv/bin/python benchmarks/freeswitch_worker.py capacity --calls 50,100,150,200 --seconds 10
    .venv/bin/python benchmarks/freeswitch_worker.py latency --turns 22

capacity: SIPp places N calls (G.711 u-law, 20 ms) straight at one FreeSWITCH worker running the project's
freeswitch-conf/ with the patched mod_audio_stream (packaging/mod_audio_stream); every call forks its audio
to `gateway serve` with the null echo model (GATEWAY_MODEL_BACKEND=null-echo: each caller frame comes back
as streamAudio). The callers' RTP is one Python socket on 127.0.0.130 (the SDP of every call points at it):
it sends a 20 ms u-law frame per call and records every packet FreeSWITCH sends back. FreeSWITCH is pinned
to core 0 (taskset -a: every thread, also those created per call), the gateway, SIPp and the callers to
core 1. Real time is judged at the caller over the measured window: per call, RTP packets received vs the
50/s expected, packets missing by sequence number, and inter-arrival times (late = more than 40 ms after the
previous packet). A count keeps real time when at least 99.5 % of the expected packets arrive, under 0.5 %
are missing and under 1 % arrive late, summed over all calls.

latency: the whole path of tests/harness.callpath without the edge (Kamailio never touches media): SIPp
caller -> FreeSWITCH -> mod_audio_stream -> a timing WebSocket relay -> `gateway serve` -> `gateway model`
(the embedded engine). The caller speaks a phrase, waits for the answer, and again, for --turns turns;
end of caller speech (last speech frame sent) -> first reply speech RTP at the caller, p50/p95. The relay
stamps the WebSocket frames both ways (the module's L16 frames in, the gateway's streamAudio out), which
splits each turn into: caller RTP -> WS frame at the gateway (the last speech frame), gateway + model
(until the first reply audio message), streamAudio -> RTP at the caller. The relay itself adds well under
a millisecond per hop (loopback, same process for both directions).

The machine is shared: the 1-minute load average is printed next to every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "packaging"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from fsmod_support import patched_module_so  # noqa: E402
from harness import sipp as sipp_mod  # noqa: E402
from harness.freeswitch import FreeSwitch  # noqa: E402
from harness.procs import GatewayModel, GatewayServe  # noqa: E402
from harness.rtp import FRAME_BYTES, frame_level_dbfs, speech_pcmu  # noqa: E402

# Addresses of this benchmark (the fsmod helper's block): callers, FreeSWITCH, gateway, relay.
CALLER_IP, FS_IP, GATEWAY_IP = "127.0.0.130", "127.0.0.131", "127.0.0.132"
TOKEN = "bench-token"


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


OTHERS_CORE: int | None = 1  # --others-anywhere: None (the gateway, SIPp and the callers float)
NICE = 0  # --nice: FreeSWITCH, the gateway, SIPp and the callers run at this nice level (root may go < 0)


def pin(pid: int, core: int | None) -> None:
    """Every thread of pid onto core (threads created later inherit it), at the --nice level."""
    if core is not None:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True, capture_output=True)
    if NICE:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), NICE)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def start_fs(workdir: Path, so: Path | None, edition: str, gateway: GatewayServe) -> FreeSwitch:
    kwargs: dict[str, object] = {"audio_stream_so": so} if so else {"edition": edition}
    fs = FreeSwitch(workdir / "fs", FS_IP, vars={
        "stream_token": TOKEN, "gateway_stream_url": gateway.stream_url, "log_level": "warning",
        "rtp_start_port": "24000", "rtp_end_port": "27999", "sessions_per_second": "200"},
        **kwargs)  # type: ignore[arg-type]
    return fs.start()


# ------------------------------------------------------------------------------------------ capacity
class Callers(asyncio.DatagramProtocol):
    """Every caller's media on one socket: one stream per FreeSWITCH RTP address."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.remotes: list[tuple[str, int]] = []
        self.seq: dict[tuple[str, int], int] = {}
        self.rx: dict[tuple[str, int], list[tuple[float, int]]] = {}
        self.recording = False
        self.rx_total = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.rx_total += 1
        if self.recording and len(data) >= 12:
            self.rx.setdefault(addr, []).append((time.monotonic(), int.from_bytes(data[2:4], "big")))

    def add(self, remote: tuple[str, int]) -> None:
        if remote not in self.seq:
            self.seq[remote] = 0
            self.remotes.append(remote)

    async def send_loop(self, frames: list[bytes], stop: asyncio.Event) -> None:
        assert self.transport is not None
        ssrc = (0x5EED).to_bytes(4, "big")
        start = time.monotonic()
        tick = 0
        while not stop.is_set():
            payload = frames[tick % len(frames)]
            for remote in self.remotes:
                seq = self.seq[remote]
                self.seq[remote] = seq + 1
                header = b"\x80\x00" + (seq & 0xFFFF).to_bytes(2, "big") + \
                    ((seq * FRAME_BYTES) & 0xFFFFFFFF).to_bytes(4, "big") + ssrc
                self.transport.sendto(header + payload, remote)
            tick += 1
            delay = start + tick * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


def judge(rx: dict[tuple[str, int], list[tuple[float, int]]], calls: int, seconds: float) -> dict:
    expected = int(seconds * 50) * calls
    received = missing = late = 0
    gaps: list[float] = []
    for packets in rx.values():
        received += len(packets)
        seqs = [s for _, s in packets]
        if seqs:
            span = (seqs[-1] - seqs[0]) % 65536 + 1
            missing += max(0, span - len(seqs))
        times = [t for t, _ in packets]
        d = np.diff(times) if len(times) > 1 else np.array([])
        gaps.extend(d.tolist())
        late += int((d > 0.040).sum())
    silent_calls = calls - sum(1 for p in rx.values() if p)
    received_pct = 100 * received / expected if expected else 0
    result = {
        "received_pct": round(received_pct, 2), "missing_pct": round(100 * missing / max(1, received), 3),
        "late_pct": round(100 * late / max(1, received), 3), "calls_without_rtp": silent_calls,
        "interarrival_ms_p50": round(1000 * pct(gaps, 50), 2) if gaps else None,
        "interarrival_ms_p99": round(1000 * pct(gaps, 99), 2) if gaps else None,
        "interarrival_ms_max": round(1000 * max(gaps), 1) if gaps else None,
    }
    result["real_time"] = (received_pct >= 99.5 and result["missing_pct"] < 0.5 and result["late_pct"] < 1.0
                           and silent_calls == 0)
    return result


async def capacity_step(workdir: Path, fs: FreeSwitch, gateway: GatewayServe, calls: int, seconds: float,
                        frames: list[bytes]) -> dict:
    loop = asyncio.get_running_loop()
    transport, callers = await loop.create_datagram_endpoint(Callers, local_addr=(CALLER_IP, 0))
    port = transport.get_extra_info("sockname")[1]

    hold_ms = int((calls / 10 + 6 + seconds + 4) * 1000)
    dlg = sipp_mod._DLG.format(caller="bench", number="1000")
    xml = sipp_mod.CALLER_TEMPLATE.format(
        number="1000", caller="bench",
        sdp=sipp_mod._SDP.format(user="bench", rtp_ip=CALLER_IP, rtp_port=port),
        answer=sipp_mod.ANSWER_200.format(
            dlg=dlg, after=sipp_mod.HANGUP_AFTER.format(hold_ms=hold_ms, dlg=dlg)))
    s = sipp_mod.Sipp(workdir, f"capacity-{calls}", CALLER_IP, xml,
                      [f"{fs.host}:{fs.sip_port}", "-m", str(calls), "-l", str(calls), "-r", "10",
                       "-timeout", f"{int(hold_ms / 1000 + 60)}s", "-timeout_error"]).start()
    assert s.proc is not None
    pin(s.proc.pid, OTHERS_CORE)
    stop = asyncio.Event()
    sender = asyncio.create_task(callers.send_loop(frames, stop))
    try:
        deadline = time.monotonic() + calls / 10 + 20
        while len(callers.remotes) < calls and time.monotonic() < deadline:
            for m in await asyncio.to_thread(s.messages):
                if (m.direction == "received" and m.first_line.startswith("SIP/2.0 200")
                        and "INVITE" in (m.header("CSeq") or "")):
                    media = sipp_mod.sdp_media(m.body)
                    if media:
                        callers.add(media)
            await asyncio.sleep(0.5)
        up = len(callers.remotes)
        await asyncio.sleep(3)  # every call's echo flowing
        fs_proc = psutil.Process(fs.proc.pid)  # type: ignore[union-attr]
        gw_proc = psutil.Process(gateway.proc.pid)  # type: ignore[union-attr]
        cpu0, gw0 = fs_proc.cpu_times(), gw_proc.cpu_times()
        load = loadavg()
        callers.recording = True
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        callers.recording = False
        elapsed = time.monotonic() - t0
        cpu1, gw1 = fs_proc.cpu_times(), gw_proc.cpu_times()
        fs_cpu = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / elapsed
        gw_cpu = 100 * ((gw1.user - gw0.user) + (gw1.system - gw0.system)) / elapsed
        result = {"calls": calls, "calls_up": up, "fs_cpu_pct_of_core": round(fs_cpu, 1),
                  "fs_cpu_pct_per_call": round(fs_cpu / max(1, up), 3), "gateway_cpu_pct": round(gw_cpu, 1),
                  "loadavg_1m": load,
                  **judge(callers.rx, calls, elapsed)}
    finally:
        stop.set()
        await sender
        transport.close()
        await asyncio.to_thread(s.wait, hold_ms / 1000 + 30)
        s.stop()
    await asyncio.to_thread(fs.wait_channels, 0, 30)  # the next count starts from an idle worker
    return result


async def capacity(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fsworker-"))
    so = Path(args.module) if args.module else None if args.edition != "patched" else patched_module_so()
    gateway = GatewayServe(workdir / "gateway", GATEWAY_IP, token=TOKEN,
                           env={"GATEWAY_MODEL_BACKEND": "null-echo", "GATEWAY_LOG_LEVEL": "WARNING"})
    fs = None
    try:
        gateway.start()
        assert gateway.proc is not None
        pin(gateway.proc.pid, OTHERS_CORE)
        fs = start_fs(workdir, so, args.edition, gateway)
        assert fs.proc is not None
        pin(fs.proc.pid, 0)
        pin(os.getpid(), OTHERS_CORE)
        frames = [speech_pcmu("one two three four five six seven eight nine ten")[i:i + FRAME_BYTES]
                  for i in range(0, 8000 * 2, FRAME_BYTES)]
        frames = [f.ljust(FRAME_BYTES, b"\xff") for f in frames]
        for calls in [int(c) for c in args.calls.split(",")]:
            r = await capacity_step(workdir, fs, gateway, calls, args.seconds, frames)
            print(json.dumps({"edition": args.module or args.edition, **r}), flush=True)
    finally:
        if fs is not None:
            fs.stop()
        gateway.stop(timeout=5)
    print(f"work folder: {workdir}")


# ------------------------------------------------------------------------------------------ latency
def l16_rms(pcm: bytes) -> float:
    a = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


SPEECH_RMS = 300.0  # about -40 dBFS: the harness's speech/silence threshold for u-law frames


class Relay:
    """WebSocket relay between mod_audio_stream and `gateway serve` that stamps when caller speech frames
    arrive and when reply audio leaves the gateway (both as seen at the gateway's door)."""

    def __init__(self, host: str, upstream: str) -> None:
        self.host, self.upstream = host, upstream
        self.port = 0
        self.loud_in: list[float] = []   # arrival of caller frames with speech
        self.loud_out: list[float] = []  # streamAudio messages with speech, leaving the gateway

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/stream"

    async def start(self) -> None:
        from websockets.asyncio.server import serve
        self.server = await serve(self._handle, self.host, 0, max_size=2**24, ping_interval=None,
                                  compression=None)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, ws) -> None:  # type: ignore[no-untyped-def]
        from websockets.asyncio.client import connect
        headers = {k: v for k, v in ws.request.headers.raw_items() if k.lower() == "authorization"}
        async with connect(self.upstream + ws.request.path[len("/stream"):], additional_headers=headers,
                           max_size=2**24, ping_interval=None, compression=None) as up:
            async def down() -> None:
                async for msg in up:
                    if isinstance(msg, str) and '"streamAudio"' in msg[:64]:
                        data = json.loads(msg).get("data", {})
                        if l16_rms(base64.b64decode(data.get("audioData", ""))) > SPEECH_RMS:
                            self.loud_out.append(time.monotonic())
                    await ws.send(msg)

            task = asyncio.create_task(down())
            try:
                async for msg in ws:
                    if isinstance(msg, bytes) and l16_rms(msg) > SPEECH_RMS:
                        self.loud_in.append(time.monotonic())
                    await up.send(msg)
            finally:
                task.cancel()


def trimmed(pcmu: bytes) -> bytes:
    """The phrase without leading/trailing frames below the speech threshold, so that the caller's
    end of speech is its last speech frame."""
    frames = [pcmu[i:i + FRAME_BYTES] for i in range(0, len(pcmu) - FRAME_BYTES + 1, FRAME_BYTES)]
    loud = [i for i, f in enumerate(frames) if frame_level_dbfs(f) > -40]
    return b"".join(frames[loud[0]:loud[-1] + 1])


async def latency_edition(workdir: Path, edition: str, turns: int) -> dict:
    from harness.callpath import Call
    from harness.rtp import RtpEndpoint

    so = patched_module_so() if edition == "patched" else None
    model = GatewayModel(workdir / "model", GATEWAY_IP)
    mode = "stream" if edition == "patched" else "file"
    fs_vars_worker = "fs1"
    relay: Relay | None = None
    gateway = None
    fs = None
    call = None
    try:
        await asyncio.to_thread(model.start)
        # FreeSWITCH's ESL address is needed by the gateway before FreeSWITCH starts: make it first.
        fs = FreeSwitch(workdir / "fs", FS_IP, vars={"stream_token": TOKEN, "log_level": "warning",
                                                     "worker_id": fs_vars_worker},
                        **({"audio_stream_so": so} if so else {"edition": edition}))  # type: ignore[arg-type]
        gateway = GatewayServe(workdir / "gateway", GATEWAY_IP, token=TOKEN, model_url=model.url,
                               esl_workers={fs_vars_worker: fs.esl_address},
                               playback_mode={fs_vars_worker: mode}, env={"GATEWAY_LOG_LEVEL": "WARNING"})
        await asyncio.to_thread(gateway.start)
        relay = Relay(GATEWAY_IP, f"ws://{GATEWAY_IP}:{gateway.media_port}/stream")
        await relay.start()
        fs.set_vars(gateway_stream_url=relay.url)
        await asyncio.to_thread(fs.start)
        rtp = RtpEndpoint(CALLER_IP, name="caller").start()
        s = sipp_mod.caller(workdir / "sipp", f"latency-{edition}", CALLER_IP, f"{fs.host}:{fs.sip_port}",
                            rtp, hangup_after_ms=(turns * 12 + 30) * 1000, timeout_s=turns * 12 + 90).start()
        call = Call(s, rtp)
        assert await asyncio.to_thread(call.wait_answered, 15), "no 200 OK"
        greeting = await asyncio.to_thread(call.wait_speech, call.answered, 1.0, 20)
        assert greeting is not None, "no greeting heard"
        phrases = [trimmed(speech_pcmu(text)) for text in
                   ("What are your opening hours?", "Do you have parking?", "Can I book a table for two?",
                    "Thank you very much.")]
        rows = []
        for i in range(turns):
            call.say(phrases[i % len(phrases)])
            end = await asyncio.to_thread(call.wait_said)
            # The endpoint notes the end one 20 ms tick after the last speech frame left.
            last_sent = end - 0.02
            answer = await asyncio.to_thread(call.wait_speech, end, 0.5, 20)
            if answer is None:
                rows.append({"turn": i, "total_ms": None})
                continue
            heard = answer[0]
            last_in = max((t for t in relay.loud_in if last_sent <= t <= end + 0.5), default=None)
            first_out = min((t for t in relay.loud_out if t >= end), default=None)
            rows.append({"turn": i, "total_ms": 1000 * (heard - end),
                         "rtp_to_ws_ms": 1000 * (last_in - last_sent) if last_in else None,
                         "gateway_model_ms": 1000 * (first_out - last_in) if first_out and last_in else None,
                         "ws_to_rtp_ms": 1000 * (heard - first_out) if first_out else None})
            call.rtp.speech_end = None
            await asyncio.sleep(0.3)
        ok = [r for r in rows if r["total_ms"] is not None]
        out: dict[str, object] = {"edition": edition, "turns": len(rows), "answered": len(ok),
                                  "loadavg_1m": loadavg()}
        for key in ("total_ms", "rtp_to_ws_ms", "gateway_model_ms", "ws_to_rtp_ms"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            if vals:
                out[key] = {"p50": round(statistics.median(vals), 1), "p95": round(pct(vals, 95), 1),
                            "min": round(min(vals), 1), "max": round(max(vals), 1)}
        return out
    finally:
        if call is not None:
            call.close()
        if fs is not None:
            await asyncio.to_thread(fs.stop)
        if gateway is not None:
            await asyncio.to_thread(gateway.stop, 5)
        await asyncio.to_thread(model.stop, 5)
        if relay is not None:
            relay.server.close()


async def latency(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fslatency-"))
    for edition in args.editions.split(","):
        r = await latency_edition(workdir / edition, edition, args.turns)
        print(json.dumps(r), flush=True)
    print(f"work folder: {workdir}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("capacity")
    c.add_argument("--calls", default="50,100,150,200", help="comma-separated concurrent call counts")
    c.add_argument("--seconds", type=float, default=10.0, help="measured window per count")
    c.add_argument("--edition", default="patched", choices=["patched", "voxcom", "upstream"])
    c.add_argument("--module", help="any mod_audio_stream.so to measure instead of --edition")
    c.add_argument("--nice", type=int, default=0, help="nice level of everything under test (shared machine)")
    c.add_argument("--others-anywhere", action="store_true",
                   help="pin only FreeSWITCH (core 0); the gateway, SIPp and the callers use any core")
    lat = sub.add_parser("latency")
    lat.add_argument("--turns", type=int, default=22)
    lat.add_argument("--editions", default="patched,upstream")
    args = p.parse_args()
    global NICE, OTHERS_CORE
    NICE = getattr(args, "nice", 0)
    if getattr(args, "others_anywhere", False):
        OTHERS_CORE = None
    # SIGTERM unwinds like Ctrl-C, so FreeSWITCH, the gateway and SIPp are stopped by the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores (FreeSWITCH on core 0, everything else on core 1)")
    asyncio.run(capacity(args) if args.what == "capacity" else latency(args))


if __name__ == "__main__":
    main()
