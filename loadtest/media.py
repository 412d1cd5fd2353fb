"""`loadtest media`: N concurrent simulated calls against a running `gateway serve`.

Each call is `gateway.client.call.place_call()` -- the `gateway call` client core, which behaves
like mod_audio_stream on the wire (metadata text frame, 20 ms L16 frames at real time, streamAudio
back) -- so the load is what FreeSWITCH workers would send.  Measured per call:

- end of speech -> first reply audio (the caller's perceived response time);
- playout jitter of the returned audio: for consecutive streamAudio messages, how far the gap
  between them departs from the audio duration of the earlier one (0 = perfectly paced);
- per-frame latency (only with the gateway's null-echo model, where reply audio is the caller's
  audio coming back): arrival of each echoed 20 ms frame minus the time it was sent;
- failures: refused upgrade, connection errors, no reply audio, client-side timeouts.

The gateway's CPU and memory come from /proc/<pid> through psutil (the pid is found from the
listening port when not given), sampled twice a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import platform
import re
import sys
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadtest.model import Check, Point, RunResult, StepResult
from loadtest.procstat import find_listener_pid, samplers_for
from loadtest.sip_load import now_iso
from loadtest.sipp import latency_of, thin
from loadtest.sippstat import percentile
from loadtest.verdict import EXIT_PASS, EXIT_THRESHOLD, EXIT_TOOL, broken

FRAME_S = 0.020


class MediaLoad(BaseModel):
    """Settings of one media load run (bounded: at most 2000 calls, 1000 at once, 10 min per call)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="ws://host:port of `gateway serve` (the /stream/<uuid> path is added)")
    calls: int = Field(24, gt=0, le=2000)
    concurrency: int = Field(12, gt=0, le=1000)
    rate: float = Field(4.0, gt=0, le=200, description="new calls per second")
    sample_rate: Literal[8000, 16000] = 8000
    question: str | None = None
    audio: str | None = None
    model: Literal["engine", "null-echo"] = Field(
        "engine", description="what the gateway talks to: the embedded engine/OpenAI, or null-echo")
    profile_name: str = ""
    token: str | None = None
    protocol: Literal["freeswitch", "twilio"] = Field(
        "freeswitch", description="speak as mod_audio_stream, or as Twilio Media Streams (8 kHz mu-law)")
    twilio_auth_token: str | None = Field(None, description="signs the Twilio upgrade (--protocol twilio)")
    call_timeout_s: float = Field(60.0, gt=0, le=600)
    processes: int = Field(1, ge=1, le=32, description="generator processes sharing the calls")
    ready_url: str | None = Field(None, description="admin /readyz to wait for (200) before the first call")
    ready_timeout_s: float = Field(30.0, gt=0, le=600)
    gateway_pid: int | None = None
    engine_pid: int | None = Field(None, description="embedded engine process to measure as well")
    engine_port: int | None = Field(None, description="find the engine's pid from its listening port")
    max_failed_ratio: float | None = Field(0.0, ge=0, le=1)
    max_reply_p95_ms: float | None = Field(3000.0, gt=0)
    max_jitter_p95_ms: float | None = Field(60.0, gt=0)

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/").removesuffix("/stream")

    @model_validator(mode="after")
    def _twilio(self) -> MediaLoad:
        if self.protocol == "twilio" and (self.sample_rate != 8000 or not self.twilio_auth_token):
            raise ValueError("--protocol twilio speaks 8 kHz mu-law and needs --twilio-auth-token")
        return self


@dataclass
class CallRecord:
    index: int
    started: float                 # monotonic
    ended: float = 0.0
    summary: object | None = None
    error: str | None = None
    frame_latencies: list[float] = field(default_factory=list)
    jitter: list[float] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        s = self.summary
        if self.error or s is None:
            return True
        return bool(getattr(s, "errors", None)) or getattr(s, "reply_s", 0) <= 0


def playout_jitter_ms(arrivals: list[tuple[float, int]], rate: int) -> list[float]:
    """|gap to the next message - audio duration of this one| per consecutive streamAudio pair.
    Gaps over 0.5 s are pauses between utterances, not jitter."""
    out = []
    for (t1, n1), (t2, _) in zip(arrivals, arrivals[1:], strict=False):
        gap = t2 - t1
        if gap < 0.5:
            out.append(abs(gap - n1 / (2 * rate)) * 1000.0)
    return out


def echo_frame_latencies_ms(arrivals: list[tuple[float, int]], send_times: list[float],
                            rate: int) -> list[float]:
    """Per-frame latency with the null-echo model: echoed frame k completes at cumulative reply byte
    (k+1)*frame_bytes and was handed to the socket at send_times[k] (the client records every send).
    Earlier versions rebuilt the send times from the end-of-speech time and the nominal 20 ms schedule,
    which shifted every frame of a call by however late that one send was."""
    frame_bytes = rate * 20 // 1000 * 2
    out, received, k = [], 0, 0
    for t, nbytes in arrivals:
        received += nbytes
        while (k + 1) * frame_bytes <= received and k < len(send_times):
            out.append((t - send_times[k]) * 1000.0)
            k += 1
    return out


def echo_delay_added_ms(latencies: list[float], window: int = 10) -> float | None:
    """How much later the echo runs at the end of a call than at its start (median of the last
    `window` frames minus median of the first).  The echo is a continuous real-time stream and the
    gateway keeps at most its playout lead in flight, so every stall of either process longer than
    the spare lead (about 40 ms) delays the rest of the call's echo for good: this is the sum of those
    steps, as opposed to the gateway's per-frame pass-through time (the start-of-call figure)."""
    if len(latencies) < 2 * window:
        return None
    return round(float(np.median(latencies[-window:]) - np.median(latencies[:window])), 2)


def _prepare_dir(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)


def _speech(load: MediaLoad, run_dir: Path) -> tuple[str, np.ndarray]:
    from gateway.client.call import load_audio
    from loadtest.audio import DEFAULT_QUESTION, speak_wav

    if load.audio:
        path = Path(load.audio)
    else:
        path = speak_wav(load.question or DEFAULT_QUESTION, run_dir / "question.wav", rate=load.sample_rate)
    return str(path), load_audio(path, load.sample_rate)


def _freeze_heap() -> None:
    """Move everything allocated so far (numpy, pydantic, httpx, matplotlib, the question) out of the
    collector's sight for the run.  Otherwise a full collection in the middle of the calls walks all of
    it: measured 58-68 ms over ~100,000 objects with the event loop stopped, so every call's frames
    left late at once; the gateway's playout (60 ms lead, ~40 ms queued) ran dry for each of them and,
    the echo being a real-time stream, stayed that much behind for the rest of the call (one underrun
    per call in the gateway's log, echo p50 20-125 ms instead of under 1 ms).  Frozen: ~3,000 objects,
    11-12 ms."""
    gc.collect()
    gc.freeze()


async def wait_ready(url: str, timeout_s: float) -> bool:
    """Poll the gateway's admin /readyz until it answers 200 (its media port accepts TCP a moment
    before it takes streams, and refuses them with 503 until then)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.2)
    return False


async def run_media(load: MediaLoad, run_dir: Path, *, progress=None) -> RunResult:
    _prepare_dir(run_dir)
    if load.ready_url and not await wait_ready(load.ready_url, load.ready_timeout_s):
        result = RunResult(kind="media", title=f"Media-plane load test of {load.base_url}", started=now_iso(),
                           settings=load.model_dump(exclude={"token"}), exit_code=EXIT_TOOL,
                           verdict=f"FAIL: gateway not ready: {load.ready_url} did not answer 200 "
                           f"within {load.ready_timeout_s:g} s")
        result.finished = now_iso()
        return result
    audio_path, speech = _speech(load, run_dir)
    speech_s = len(speech) / load.sample_rate
    _freeze_heap()
    result = RunResult(kind="media", title=f"Media-plane load test of {load.base_url} ({load.model})",
                       started=now_iso(), settings=load.model_dump(exclude={"token"}))
    result.host = {"hostname": platform.node(), "cpus": len(os.sched_getaffinity(0))}
    pids = {"gateway": load.gateway_pid or find_listener_pid(urlsplit(load.base_url).port or 80)}
    if load.engine_pid or load.engine_port:
        pids["engine"] = load.engine_pid or find_listener_pid(load.engine_port or 0)
    # the generator itself too: near 100 % of a core, its own lag shows up as latency and jitter
    pids["loadtest"] = os.getpid()
    samplers, notes = samplers_for({name: pid for name, pid in pids.items() if pid})
    result.resources.update(notes)
    sampler_tasks = [asyncio.create_task(s.run()) for s in samplers.values()]
    t_run = time.monotonic()
    records: list[CallRecord] = []
    try:
        if load.processes == 1:
            await drive_calls(load, speech, list(range(load.calls)), records, progress=progress, t_run=t_run)
        else:
            records = await _drive_in_processes(load, speech, progress, t_run)
    finally:
        gc.unfreeze()  # the calls are over: an embedding process (the test suite) collects as before
        for task in sampler_tasks:
            task.cancel()
        await asyncio.gather(*sampler_tasks, return_exceptions=True)
    finish = getattr(progress, "finish", None)
    if finish:
        finish()
    step = _media_step(load, records, t_run, speech_s)
    result.steps.append(step)
    for name, sampler in samplers.items():
        summary = sampler.summary()
        result.resources[name] = summary
        step.extra[f"{name}_cpu_seconds"] = summary["cpu_seconds"]
        step.extra[f"{name}_cpu_seconds_per_call"] = round(summary["cpu_seconds"] / max(1, len(records)), 4)
        step.extra[f"{name}_rss_mb_peak"] = summary["rss_mb_peak"]
    if "gateway" not in samplers:
        result.resources["note"] = "gateway pid unknown (pass --gateway-pid); CPU/memory not measured"
    result.finished = now_iso()
    _judge_media(result, step, records)
    return result



def _light(s) -> SimpleNamespace:
    """What the report needs from a CallSummary (no reply audio): small, and picklable across
    processes."""
    return SimpleNamespace(
        errors=list(s.errors), reply_s=s.reply_s, first_reply_latency_ms=s.first_reply_latency_ms,
        speech_end_t=s.speech_end_t, transcripts=list(s.transcripts),
        send_lateness_ms=dict(s.send_lateness_ms), frames_sent=s.frames_sent,
        frames_received=s.frames_received)


async def _one_twilio(load: MediaLoad, speech: np.ndarray, rec: CallRecord, *, max_duration: float,
                      echo: bool) -> None:
    """One Twilio Media Streams call (`gateway call --protocol twilio`'s core) into the same record."""
    from gateway.client.twilio_call import place_twilio_call

    try:
        s = await asyncio.wait_for(place_twilio_call(
            f"{load.base_url}/twilio/stream", speech, auth_token=load.twilio_auth_token or "",
            profile=load.profile_name, wait_for_greeting=not echo, max_duration=max_duration,
            reply_timeout=min(15.0, load.call_timeout_s)), timeout=load.call_timeout_s + 10)
        # Twilio media is mu-law: one byte per sample, so the L16 jitter helper gets half the rate.
        rec.jitter = playout_jitter_ms(s.reply_arrivals, 4000)
        rec.summary = SimpleNamespace(
            errors=list(s.errors), reply_s=s.reply_s, first_reply_latency_ms=s.first_reply_latency_ms,
            speech_end_t=None, transcripts=[], send_lateness_ms={}, frames_sent=s.frames_sent,
            frames_received=len(s.reply_arrivals))
    except TimeoutError:
        rec.error = "client timeout"
    except Exception as exc:  # noqa: BLE001 - one broken call must not stop the load
        rec.error = f"{type(exc).__name__}: {exc}"


async def drive_calls(load: MediaLoad, speech: np.ndarray, indices: list[int], records: list[CallRecord], *,
                      progress=None, t_run: float | None = None, concurrency: int | None = None,
                      rate: float | None = None) -> list[CallRecord]:
    """Place the calls `indices` at `rate` per second, at most `concurrency` at once, appending a
    CallRecord per call to `records` as it starts.  Bounded: calls/rate + call timeout + 30 s."""
    from gateway.client.call import place_call

    concurrency = concurrency or load.concurrency
    rate = rate or load.rate
    t_run = time.monotonic() if t_run is None else t_run
    gate = asyncio.Semaphore(concurrency)
    echo = load.model == "null-echo"
    speech_s = len(speech) / load.sample_rate
    # null-echo answers every frame, so "the reply has finished" never comes: hang up after the question
    max_duration = speech_s + 2.0 if echo else load.call_timeout_s

    async def one(i: int) -> None:
        async with gate:
            rec = CallRecord(index=i, started=time.monotonic())
            records.append(rec)
            call_uuid = str(uuidlib.uuid4())
            metadata = {"caller": f"+1415555{i:04d}", "callee": "+18005550100",
                        "call_id": f"CA{uuidlib.uuid4().hex}", "worker": "loadtest",
                        "profile": load.profile_name, "rate": load.sample_rate}
            if load.protocol == "twilio":
                await _one_twilio(load, speech, rec, max_duration=max_duration, echo=echo)
                rec.ended = time.monotonic()
                return
            try:
                s = await asyncio.wait_for(place_call(
                    f"{load.base_url}/stream/{call_uuid}", speech, rate=load.sample_rate, metadata=metadata,
                    token=load.token, wait_for_greeting=not echo, max_duration=max_duration,
                    reply_timeout=min(15.0, load.call_timeout_s)), timeout=load.call_timeout_s + 10)
                rec.jitter = playout_jitter_ms(s.reply_arrivals, load.sample_rate)
                if echo:
                    rec.frame_latencies = echo_frame_latencies_ms(s.reply_arrivals, s.send_times,
                                                                  load.sample_rate)
                rec.summary = _light(s)
            except TimeoutError:
                rec.error = "client timeout"
            except Exception as exc:  # noqa: BLE001 - one broken call must not stop the load
                rec.error = f"{type(exc).__name__}: {exc}"
            rec.ended = time.monotonic()

    async def ticker() -> None:
        while progress is not None:
            await asyncio.sleep(1.0)
            done = [r for r in records if r.ended]
            progress(f"[media] {time.monotonic() - t_run:6.1f}s started {len(records)}/{load.calls} "
                     f"active {len(records) - len(done)} done {len(done)} "
                     f"failed {sum(r.failed for r in done)}")

    tick = asyncio.create_task(ticker())
    tasks = []
    try:
        for i in indices:
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(1.0 / rate)
        bound = len(indices) / rate + load.call_timeout_s + 30
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=bound)
    except TimeoutError:
        pass
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tick.cancel()
        await asyncio.gather(tick, return_exceptions=True)
    return records


def _drive_part(load_doc: dict, speech: bytes, indices: list[int], concurrency: int, rate: float,
                t_run: float) -> list[CallRecord]:
    """One generator process's share of the calls (runs in a spawned process)."""
    load = MediaLoad.model_validate(load_doc)
    pcm = np.frombuffer(speech, dtype=np.int16)
    _freeze_heap()
    return asyncio.run(drive_calls(load, pcm, indices, [], t_run=t_run, concurrency=concurrency, rate=rate))


async def _drive_in_processes(load: MediaLoad, speech: np.ndarray, progress,
                              t_run: float) -> list[CallRecord]:
    """Split the calls over `load.processes` generator processes (round-robin), each with its share
    of the rate and concurrency, so one Python process's CPU does not cap the load.  CLOCK_MONOTONIC
    is system-wide, so their timestamps share one axis."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    n = load.processes
    doc = load.model_dump()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
        pcm = speech.astype(np.int16).tobytes()
        share = -(-load.concurrency // n)
        futures = [loop.run_in_executor(pool, _drive_part, doc, pcm, list(range(k, load.calls, n)), share,
                                        load.rate / n, t_run) for k in range(n)]
        waiter = asyncio.ensure_future(asyncio.gather(*futures))
        while not waiter.done():
            await asyncio.wait([waiter], timeout=1.0)
            if progress is not None and not waiter.done():
                progress(f"[media] {time.monotonic() - t_run:6.1f}s {n} generator processes placing "
                         f"{load.calls} calls")
        parts = waiter.result()
    return [rec for part in parts for rec in part]


def _media_step(load: MediaLoad, records: list[CallRecord], t_run: float, speech_s: float) -> StepResult:
    step = StepResult(index=1, label=f"media {load.calls} calls x{load.concurrency}", target_rate=load.rate,
                      requested=load.calls)
    step.attempted = len(records)
    finished = [r for r in records if r.ended]
    step.failed = sum(r.failed for r in finished)
    step.successful = len(finished) - step.failed
    step.unfinished = len(records) - len(finished)
    step.failed_ratio = (step.failed + step.unfinished) / step.attempted if step.attempted else None
    if records:
        first = min(r.started for r in records)
        last_start = max(r.started for r in records)
        step.achieved_rate = (len(records) - 1) / (last_start - first) if last_start > first else None
        step.duration_s = max((r.ended for r in finished), default=time.monotonic()) - t_run
    reply = []
    for r in finished:
        s = r.summary
        lat = getattr(s, "first_reply_latency_ms", None)
        if lat is not None and getattr(s, "speech_end_t", None):
            reply.append((s.speech_end_t - t_run, lat))
    step.samples = thin(reply)
    step.setup_ms = latency_of([ms for _, ms in reply])
    frames = [x for r in finished for x in r.frame_latencies]
    step.frame_latency_ms = latency_of(frames) if frames else None
    if frames:
        # split the echo latency into the gateway's pass-through time (first frames of each call) and
        # what stalls added on top for the rest of the call (see echo_delay_added_ms)
        start = [x for r in finished for x in r.frame_latencies[:10]]
        step.extra["echo_latency_call_start_p50_ms"] = round(float(np.median(start)), 2)
        added = [a for a in (echo_delay_added_ms(r.frame_latencies) for r in finished) if a is not None]
        if added:
            step.extra["echo_delay_added_by_stalls_p50_ms"] = round(float(np.median(added)), 2)
            step.extra["echo_delay_added_by_stalls_max_ms"] = round(float(np.max(added)), 2)
    jit = [x for r in finished for x in r.jitter]
    step.jitter_ms = latency_of(jit) if jit else None
    errors: dict[str, int] = {}
    for r in finished:
        for e in ([r.error] if r.error else []) + list(getattr(r.summary, "errors", []) or []):
            # e.g. "upgrade: no response (TimeoutError)"; numbers masked so one kind counts once
            key = re.sub(r"\d+", "N", e)[:100]
            errors[key] = errors.get(key, 0) + 1
        if not r.error and not getattr(r.summary, "errors", None) and getattr(r.summary, "reply_s", 0) <= 0:
            errors["no reply audio"] = errors.get("no reply audio", 0) + 1
    step.errors = errors
    # per-second series: calls started, calls in progress, failures ending in that second
    horizon = math.ceil(step.duration_s) + 1 if records else 0
    for sec in range(horizon):
        lo, hi = t_run + sec, t_run + sec + 1
        step.series.append(Point(
            t=sec + 1.0,
            calls_per_s=sum(lo <= r.started < hi for r in records),
            concurrent=sum(r.started < hi and (not r.ended or r.ended >= hi) for r in records),
            successful=sum(lo <= r.ended < hi and not r.failed for r in finished),
            failed=sum(lo <= r.ended < hi and r.failed for r in finished)))
    step.peak_concurrent = int(max((p.concurrent for p in step.series), default=0))
    lateness = [getattr(r.summary, "send_lateness_ms", {}).get("p99") for r in finished if r.summary]
    lateness = [x for x in lateness if x is not None]
    if lateness:
        # our own pacing: if the load generator itself is late, latencies above are not the gateway's
        step.extra["client_send_lateness_p99_ms_worst"] = round(max(lateness), 2)
    step.extra["question_seconds"] = round(speech_s, 2)
    for r in finished:
        # the agent's last words in the first call that has any: its answer, after the greeting
        said = [t["text"] for t in getattr(r.summary, "transcripts", []) or [] if t.get("role") == "agent"]
        if said:
            step.extra["agent_answer_first_call"] = said[-1][:160]
            break
    replies = [getattr(r.summary, "reply_s", 0.0) for r in finished if r.summary]
    if replies:
        step.extra["reply_seconds_mean"] = round(sum(replies) / len(replies), 2)
    summaries = [r.summary for r in finished if r.summary]
    step.extra["frames_sent"] = sum(getattr(s, "frames_sent", 0) for s in summaries)
    step.extra["frames_received"] = sum(getattr(s, "frames_received", 0) for s in summaries)
    return step


def _judge_media(result: RunResult, step: StepResult, records: list[CallRecord]) -> None:
    load = MediaLoad.model_validate(result.settings | {"token": None})
    checks: list[Check] = []

    def cap(name: str, value: float | None, limit: float | None, unit: str) -> None:
        if limit is None:
            return
        ok = value is not None and value <= limit
        detail = "no data" if value is None else f"{value:.4g}{unit} {'<=' if ok else '>'} {limit:g}{unit}"
        checks.append(Check(name=name, value=value, limit=limit, passed=ok, detail=detail))

    cap("failed-call ratio", step.failed_ratio, load.max_failed_ratio, "")
    cap("end of speech -> first audio p95", step.setup_ms.p95, load.max_reply_p95_ms, " ms")
    cap("playout jitter p95", step.jitter_ms.p95 if step.jitter_ms else None, load.max_jitter_p95_ms, " ms")
    step.checks = checks
    step.passed = bool(records) and all(c.passed for c in checks)
    connect_failures = sum(1 for r in records if r.summary is not None and any(
        e.startswith("connect:") for e in getattr(r.summary, "errors", [])))
    if records and connect_failures == len(records):
        result.passed, result.exit_code = False, EXIT_TOOL
        result.verdict = f"FAIL: could not connect to the gateway at {load.base_url} (no call got through)"
        return
    result.passed = step.passed
    result.exit_code = EXIT_PASS if step.passed else EXIT_THRESHOLD
    if step.passed:
        result.verdict = (f"PASS: {step.successful}/{step.attempted} calls, peak {step.peak_concurrent} "
                          f"concurrent, end of speech -> first audio p95 {step.setup_ms.p95 or 0:.0f} ms")
    else:
        result.verdict = "FAIL: " + "; ".join(broken(step))


def run_media_cli(load: MediaLoad, out: Path, *, quiet: bool = False) -> int:
    from loadtest.report import write_reports
    from loadtest.sipp import stderr_progress

    try:
        import gateway.client.call  # noqa: F401
    except ImportError as exc:
        print(f"loadtest media: the gateway client is not importable: {exc}", file=sys.stderr)
        return EXIT_TOOL
    result = asyncio.run(run_media(load, out, progress=None if quiet else stderr_progress()))
    paths = write_reports(result, out)
    print(result.verdict)
    print(f"report: {paths['markdown']}  json: {paths['json']}  charts: {out}/*.png")
    return result.exit_code


def percentiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
