"""Benchmark of the embedded Realtime engine (`gateway model`), bounded to a few minutes.

1. latency: end of caller speech -> first `response.output_audio.delta`, caller audio streamed in real
   time as 20 ms μ-law frames through the official SDK (as the gateway does). "End of caller speech" is
   the send time of the last frame above -45 dBFS. Reported whole and minus `silence_duration_ms`
   (the wait server VAD needs before it may call the turn over, the same on any Realtime server).
2. memory per session: engine RSS with N sessions open (after session.update and one spoken turn each)
   minus RSS with none, divided by N.
3. concurrency: N sessions in one engine process, each a caller that speaks a phrase every few seconds,
   real-time frames both ways; engine CPU (one core = 100 %) and the latency percentiles at each N.
   `--pin-core C` runs the engine and its recognition workers on core C only (taskset), so the figures
   are sessions per core, whatever the rest of the machine does.
4. accuracy (`--accuracy`): the held-out set of tests/engine/heldout.py through the engine's own parts:
   transcript word error rate, right first answer, wrong actions, ASR CPU per turn; and, for comparison,
   the word error rate of pocketsphinx's general language model (the en-us LM in its wheel) on the same
   audio.

Caller phrases are the held-out utterances (tests/engine/heldout.py), each in its voice and rate.

    .venv/bin/python benchmarks/model_engine.py [--turns 10] [--levels 10,25,50] [--seconds 20]
    .venv/bin/python benchmarks/model_engine.py --accuracy
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests" / "engine"))

import heldout  # noqa: E402

from gateway.audio.g711 import ULAW_DECODE  # noqa: E402

PIN_CORE: int | None = None  # --pin-core
FRAME = 160  # 20 ms of μ-law
SILENCE = b"\xff" * FRAME


def speak(text: str) -> bytes:
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True
    ).stdout
    return subprocess.run(
        ["sox", "-D", "-t", "wav", "-", "-r", "8000", "-e", "u-law", "-t", "raw", "-"],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout


def frames_of(audio: bytes) -> list[bytes]:
    audio += b"\xff" * (-len(audio) % FRAME)
    return [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]


def is_speech(frame: bytes) -> bool:
    x = ULAW_DECODE[np.frombuffer(frame, np.uint8)].astype(np.float64)
    power = float(np.dot(x, x)) / len(x)
    return power > 0 and 10 * np.log10(power / 32768**2) > -45


def append_msg(frame: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()})


def session_update(silence_ms: int) -> dict:
    fmt = {"type": "audio/pcmu"}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {
                    "format": fmt,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": silence_ms,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": fmt, "voice": "marin"},
            },
            "tools": [
                {"type": "function", "name": n, "parameters": {"type": "object"}}
                for n in ("transfer_call", "end_call", "escalate")
            ],
        },
    }


HOST = "127.0.0.1"  # --host: the loopback address the engine under test listens on


class EngineProcess:
    def __init__(self, *extra: str, log_level: str = "WARNING") -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        t0 = time.monotonic()
        pin = ["taskset", "-c", str(PIN_CORE)] if PIN_CORE is not None else []
        self.proc = subprocess.Popen(
            [
                *pin,
                sys.executable,
                "-m",
                "gateway",
                "model",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--log-level",
                log_level,
                *extra,
            ],
            cwd=ROOT,
            stderr=self.log,
            stdout=subprocess.DEVNULL,
        )
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() - t0 > 120:
                    raise RuntimeError(
                        "engine did not start: " + Path(self.log.name).read_text()[-2000:]
                    ) from None
                time.sleep(0.05)
        self.ready_s = time.monotonic() - t0
        self.ps = psutil.Process(self.proc.pid)  # taskset execs the engine: same pid
        self.url = f"ws://{HOST}:{self.port}/v1"

    def _workers(self) -> list[psutil.Process]:
        """The recognition worker processes (and the forkserver) the engine started."""
        try:
            return self.ps.children(recursive=True)
        except psutil.Error:
            return []

    def rss_mb(self, workers: bool = False) -> float:
        procs = [self.ps, *(self._workers() if workers else [])]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def cpu_s(self) -> float:
        """CPU of the server process (event loop, bulk thread)."""
        t = self.ps.cpu_times()
        return t.user + t.system

    def worker_cpu_s(self) -> float:
        """CPU of the recognition workers."""
        total = 0.0
        for p in self._workers():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def asr_cpu_ms(self) -> list[float]:
        """CPU the engine spent recognising each caller turn (from its `caller turn` log lines)."""
        import re

        return [float(m) for m in re.findall(r"asr_cpu_ms=([0-9.]+)", Path(self.log.name).read_text())]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        os.unlink(self.log.name)


class Caller:
    """One simulated call: real-time 20 ms frames out, events in, latency per turn.

    A lean client on purpose (raw aiohttp WebSocket, frames serialised once, events recognised by their
    leading bytes): an SDK-based client parsing every audio delta saturated before the engine did. The
    SDK path itself is exercised by tests/engine."""

    def __init__(self, url: str, phrases: dict[str, list[bytes]], silence_ms: int, offset: int = 0) -> None:
        self.url, self.silence_ms, self.offset = url, silence_ms, offset
        self.turns = [
            ([append_msg(f) for f in frames], max(i for i, f in enumerate(frames) if is_speech(f)))
            for frames in phrases.values()
        ]
        self.silence = append_msg(SILENCE)
        self.latencies: list[float] = []  # end of speech -> first delta, seconds
        self.server_part: list[float] = []  # speech_stopped arrival -> first delta
        self.endpointing: list[float] = []  # end of speech -> speech_stopped arrival
        self.late_frames = 0
        self._speech_end: float | None = None
        self._stopped_at: float | None = None
        self._waiting = False
        self.replied = asyncio.Event()

    async def run(self, seconds: float) -> None:
        import aiohttp

        url = self.url.replace("/v1", "/v1/realtime") + "?model=gpt-realtime&profile=front-desk"
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, headers={"Authorization": "Bearer x"}, max_msg_size=0) as ws,
        ):
            await ws.send_str(json.dumps(session_update(self.silence_ms)))
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._speak_loop(ws, seconds)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, ws) -> None:
        async for msg in ws:
            data = msg.data
            if not isinstance(data, str):
                continue
            now = time.monotonic()
            head = data[:60]
            if head.startswith('{"type":"input_audio_buffer.speech_stopped"'):
                self._stopped_at = now
                if self._speech_end is not None and self._waiting:
                    self.endpointing.append(now - self._speech_end)
            elif head.startswith('{"type":"response.output_audio.delta"') and self._waiting:
                self._waiting = False
                if self._speech_end is not None:
                    self.latencies.append(now - self._speech_end)
                if self._stopped_at is not None:
                    self.server_part.append(now - self._stopped_at)
            elif head.startswith('{"type":"response.done"'):
                self.replied.set()

    async def _speak_loop(self, ws, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        t = start
        n = self.offset

        async def tick(message: str) -> None:
            nonlocal t
            t += 0.02
            delay = t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.02:
                self.late_frames += 1
            await ws.send_str(message)

        while loop.time() - start < seconds:
            frames, last_speech = self.turns[n % len(self.turns)]
            n += 1
            self.replied.clear()
            self._waiting = True
            self._stopped_at = None
            for i, f in enumerate(frames):
                await tick(f)
                if i == last_speech:
                    self._speech_end = time.monotonic()
            # keep streaming silence (a live call never stops sending) until the reply has finished
            while not self.replied.is_set() and loop.time() - start < seconds + 15:
                await tick(self.silence)
            for _ in range(25):  # half a second of pause before the next sentence
                await tick(self.silence)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


async def bench_latency(phrases, turns: int, silence_ms: int) -> dict:
    engine = EngineProcess(log_level="INFO")
    try:
        caller = Caller(engine.url, phrases, silence_ms)
        task = asyncio.create_task(caller.run(3600))
        while len(caller.latencies) < turns and not task.done():  # noqa: ASYNC110 - polls two conditions
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        lat = [x * 1000 for x in caller.latencies]
        srv = [x * 1000 for x in caller.server_part]
        ept = [x * 1000 for x in caller.endpointing]
        return {
            "silence_duration_ms": silence_ms,
            "turns": len(lat),
            "startup_to_port_s": round(engine.ready_s, 2),
            "end_of_speech_to_first_audio_ms": {
                "p50": round(statistics.median(lat), 1),
                "p95": round(pct(lat, 95), 1),
                "max": round(max(lat), 1),
            },
            "end_of_speech_to_speech_stopped_ms": {
                "p50": round(statistics.median(ept), 1),
                "max": round(max(ept), 1),
            },
            "late_client_frames": caller.late_frames,
            "engine_asr_cpu_ms_per_turn": {
                "p50": round(statistics.median(engine.asr_cpu_ms() or [0]), 1),
                "max": round(max(engine.asr_cpu_ms() or [0]), 1),
            },
            "speech_stopped_event_to_first_audio_ms": {
                "p50": round(statistics.median(srv), 1),
                "max": round(max(srv), 1),
            },
        }
    finally:
        engine.stop()


async def bench_memory(phrases, n: int) -> dict:
    """RSS growth per held session: n sessions, each after session.update and one spoken turn answered,
    against the same engine after one such call has come and gone (so one-off allocations such as the
    decoder's working buffers are already in the baseline)."""
    import aiohttp

    engine = EngineProcess()
    url = engine.url.replace("/v1", "/v1/realtime") + "?model=gpt-realtime&profile=front-desk"
    audio = b"".join(next(iter(phrases.values())))
    msg = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})

    async def one_turn(http):
        ws = await http.ws_connect(url, headers={"Authorization": "Bearer x"}, max_msg_size=0)
        await ws.send_str(json.dumps(session_update(500)))
        await ws.send_str(msg)
        async for m in ws:
            if isinstance(m.data, str) and m.data.startswith('{"type":"response.done"'):
                break
        return ws

    try:
        fresh = engine.rss_mb()
        async with aiohttp.ClientSession() as http:
            ws = await one_turn(http)
            await ws.close()
            await asyncio.sleep(1.0)
            baseline = engine.rss_mb()
            held = await asyncio.gather(*(one_turn(http) for _ in range(n)))
            await asyncio.sleep(1.0)
            live = engine.rss_mb()
            for ws in held:
                await ws.close()
        return {
            "sessions": n,
            "rss_fresh_mb": round(fresh, 1),
            "rss_after_one_call_mb": round(baseline, 1),
            "rss_with_sessions_mb": round(live, 1),
            "per_session_kb": round((live - baseline) * 1024 / n, 1),
        }
    finally:
        engine.stop()


async def bench_concurrency(phrases, levels: list[int], seconds: float) -> list[dict]:
    rows = []
    for n in levels:
        engine = EngineProcess()
        try:
            callers = [Caller(engine.url, phrases, 500, offset=i) for i in range(n)]
            tasks = []
            for c in callers:  # stagger call starts over one second
                tasks.append(asyncio.create_task(c.run(seconds)))
                await asyncio.sleep(1.0 / n)
            cpu0, wcpu0, t0 = engine.cpu_s(), engine.worker_cpu_s(), time.monotonic()
            await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - t0
            cpu = (engine.cpu_s() - cpu0) / elapsed * 100
            wcpu = (engine.worker_cpu_s() - wcpu0) / elapsed * 100
            lat = [x * 1000 for c in callers for x in c.latencies]
            rows.append(
                {
                    "sessions": n,
                    "engine_cpu_pct_of_one_core": round(cpu, 1),
                    "asr_workers_cpu_pct_of_one_core": round(wcpu, 1),
                    "turns": len(lat),
                    "latency_p50_ms": round(pct(lat, 50), 1),
                    "latency_p95_ms": round(pct(lat, 95), 1),
                    "latency_max_ms": round(max(lat, default=0), 1),
                    "client_late_frames": sum(c.late_frames for c in callers),
                    "rss_mb": round(engine.rss_mb(), 1),
                    "rss_with_workers_mb": round(engine.rss_mb(workers=True), 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        finally:
            engine.stop()
    return rows


def accuracy() -> dict:
    """The held-out set through Whisper (the engine's transcriber and dialogue, in this process) and
    pocketsphinx's general LM for comparison."""
    from gateway.engine import audio
    from gateway.engine.asr import Recognition, WhisperTranscriber
    from gateway.engine.profiles import load_profile
    from gateway.engine.speech import Engines

    profile = load_profile(ROOT / "gateway" / "profiles" / "front-desk.yaml")
    engines = Engines(None, WhisperTranscriber(), contexts={profile.name: profile.dialogue.asr_prompt or ""})
    t0 = time.monotonic()
    figures = heldout.run(profile, engines)
    elapsed = time.monotonic() - t0
    print(figures.table())
    asr_ms = [o.asr_ms[0] for o in figures.outcomes]
    by_voice: dict[str, list[int]] = {}
    for o in figures.outcomes:
        v = by_voice.setdefault(f"{o.voice} {o.wpm}", [0, 0])
        v[0] += heldout.edit_distance(heldout.words(o.case.text), heldout.words(o.transcript))
        v[1] += len(heldout.words(o.case.text))
    out = {
        "utterances": len(figures.outcomes),
        "whisper_tiny_en_wer": round(figures.wer, 3),
        "wer_by_voice": {k: round(e / n, 3) for k, (e, n) in by_voice.items()},
        "right_first_answer": f"{sum(o.correct for o in figures.outcomes)}/{len(figures.outcomes)}",
        "intent_accuracy": round(figures.intent_accuracy, 3),
        "actions_done": figures.actions_done,
        "wrong_actions": figures.wrong_actions,
        "asr_cpu_ms_per_utterance": {"p50": round(pct(asr_ms, 50), 1), "p95": round(pct(asr_ms, 95), 1)},
        "wall_s": round(elapsed, 1),
    }
    try:
        from pocketsphinx import Decoder

        decoder = Decoder(samprate=16000, loglevel="FATAL")

        def sphinx(pcm) -> Recognition:
            decoder.start_utt()
            decoder.process_raw(audio.resample(pcm, 8000, 16000).astype("<i2").tobytes(), full_utt=True)
            decoder.end_utt()
            return Recognition(decoder.hyp().hypstr if decoder.hyp() else "")

        t0 = time.process_time()
        errors = total = 0
        for i, case in enumerate(heldout.CASES):
            voice, wpm, noisy = heldout.voice_for(i)
            pcm = audio.decode("audio/pcmu", heldout.caller_audio(case.text, voice, wpm, noisy))
            errors += heldout.edit_distance(heldout.words(case.text), heldout.words(sphinx(pcm).transcript))
            total += len(heldout.words(case.text))
        out["pocketsphinx_lm_wer"] = round(errors / total, 3)
        out["pocketsphinx_lm_cpu_ms_per_utterance"] = round(
            (time.process_time() - t0) * 1000 / len(heldout.CASES)
        )
    except ImportError:
        out["pocketsphinx_lm_wer"] = None
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--levels", default="5,10,20,40")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--memory-sessions", type=int, default=100)
    p.add_argument("--latency-only", action="store_true")
    p.add_argument("--host", default=HOST, help="loopback address for the engine under test")
    p.add_argument("--pin-core", type=int, help="run the engine and its workers on this core only")
    p.add_argument("--accuracy", action="store_true", help="the held-out set's figures only")
    args = p.parse_args()
    globals()["HOST"] = args.host
    globals()["PIN_CORE"] = args.pin_core
    if args.accuracy:
        print(json.dumps(accuracy(), indent=2))
        return
    phrases = {}
    for i, case in enumerate(heldout.CASES):
        voice, wpm, _noisy = heldout.voice_for(i)
        phrases[case.text] = frames_of(heldout.caller_audio(case.text, voice, wpm, False) + b"\xff" * 8 * 500)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
    }
    result["latency"] = [await bench_latency(phrases, args.turns, s) for s in (500, 200)]
    print(json.dumps(result["latency"]), flush=True)
    if args.latency_only:
        return
    result["memory"] = await bench_memory(phrases, args.memory_sessions)
    print(json.dumps(result["memory"]), flush=True)
    result["concurrency"] = await bench_concurrency(
        phrases, [int(x) for x in args.levels.split(",")], args.seconds
    )
    result["loadavg_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
