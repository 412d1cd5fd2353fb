"""Speech recognition off the event loop: committed turns decoded in worker processes, shortest first.

A turn's transcription costs ~100-300 ms of CPU (Whisper tiny.en; more for a long monologue). Run on the
event loop it would stall every other session for that long, and a flood of long turns would stall them
for seconds; in a thread it would still hold the interpreter lock for the feature extraction. So it runs
in a pool of worker processes, each with its own Whisper model (one intra-op thread each: one worker per
core is the most a core can give), and the event loop only waits for the result.

The queue in front of the pool is shortest-audio-first: a caller's two-second question never waits
behind a stream of two-minute turns from another session. Each session has at most one turn in
recognition at a time (the session waits for it), so one session cannot fill the queue either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from .asr import Recognition

log = logging.getLogger("gateway.engine.recognition")


@dataclass(frozen=True)
class RecognitionJob:
    """One stretch of caller audio to transcribe with a profile's recogniser."""

    profile: str
    pcm: np.ndarray  # int16 at `rate`
    rate: int

    @property
    def audio_ms(self) -> int:
        return len(self.pcm) * 1000 // self.rate if self.rate else 0


# ---------------------------------------------------------------- worker process side
_worker_engines: Any = None


def _init_worker(contexts: dict[str, str]) -> None:
    global _worker_engines
    from .asr import WhisperTranscriber
    from .speech import Engines

    # Workers only recognise.
    _worker_engines = Engines(synth=None, transcriber=WhisperTranscriber(), contexts=contexts)


def _recognise_in_worker(profile: str, pcm: bytes, rate: int) -> Recognition | None:
    return _worker_engines.recognise(profile, np.frombuffer(pcm, np.int16), rate)


# ---------------------------------------------------------------- event loop side
class RecognitionPool:
    """Runs `RecognitionJob`s on `workers` processes (0: one thread of this process, using `local`).
    `contexts` is each profile's recognition prompt (`dialogue.asr_prompt`)."""

    def __init__(
        self,
        workers: int,
        local: Callable[[RecognitionJob], Recognition | None],
        contexts: dict[str, str] | None = None,
    ) -> None:
        self._contexts = dict(contexts or {})
        self.workers = workers
        self._local = local
        self._slots = max(1, workers)
        self._busy = 0
        self._lock = threading.Lock()  # _busy is also touched from the executor's callback thread
        self._waiting: list[tuple[int, int, RecognitionJob, asyncio.Future[Recognition | None]]] = []
        self._seq = itertools.count()
        self._executor = self._new_executor()

    def _new_executor(self) -> concurrent.futures.Executor:
        if self.workers == 0:
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine-asr")
        # forkserver: a worker never inherits the event loop, sockets or threads of the server.
        return concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("forkserver"),
            initializer=_init_worker,
            initargs=(self._contexts,),
        )

    def _submit(self, job: RecognitionJob) -> concurrent.futures.Future[Recognition | None]:
        if self.workers == 0:
            return self._executor.submit(self._local, job)
        return self._executor.submit(
            _recognise_in_worker, job.profile, job.pcm.astype(np.int16).tobytes(), job.rate
        )

    def warm_up(self) -> None:
        """Start every worker and decode once in each before the engine listens."""
        # Speech-like noise, so the whole model runs once (pure silence is answered without it).
        noise = np.random.default_rng(1).normal(0, 3000, 16000).astype(np.int16)
        silence = RecognitionJob("", noise, 16000)
        futures = [self._submit(silence) for _ in range(self._slots)]
        for f in futures:
            f.result(timeout=120)

    async def recognise(self, job: RecognitionJob) -> Recognition | None:
        """The job's result, decoded when a worker is free (shortest queued audio first). A failed
        decode is logged and gives None (the turn counts as not understood); the session lives on."""
        future: asyncio.Future[Recognition | None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._waiting, (len(job.pcm) * 16000 // max(1, job.rate), next(self._seq), job, future)
        )
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._busy >= self._slots or not self._waiting:
                    return
                _, _, job, future = heapq.heappop(self._waiting)
                if future.cancelled():  # its session went away while it queued
                    continue
                self._busy += 1
            loop = future.get_loop()
            try:
                cf = self._submit(job)
            except (BrokenProcessPool, RuntimeError) as exc:
                self._release()
                self._replace_executor(exc)
                future.set_result(None)
                continue

            def done(cf: concurrent.futures.Future[Recognition | None], future=future, loop=loop) -> None:
                try:
                    loop.call_soon_threadsafe(self._finished, cf, future)
                except RuntimeError:  # that event loop is gone (its session's server stopped)
                    self._release()

            cf.add_done_callback(done)

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1

    def _finished(
        self, cf: concurrent.futures.Future[Recognition | None], future: asyncio.Future[Any]
    ) -> None:
        self._release()
        try:
            result = cf.result()
        except BrokenProcessPool as exc:
            self._replace_executor(exc)
            result = None
        except Exception:
            log.exception("recognition failed")
            result = None
        if not future.done():
            future.set_result(result)
        self._dispatch()

    def _replace_executor(self, exc: BaseException) -> None:
        log.error("recognition workers lost; starting new ones", extra={"fields": {"error": str(exc)}})
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
