"""The writer task: calls append ops without waiting; one task writes them in batches on a thread.

The call path only ever calls `RecordWriter.submit`, which appends to a bounded in-memory buffer and
returns: it never awaits, never takes a lock a database holds, never does I/O. The task takes what is
buffered (up to `batch` ops), applies it in one transaction on the store's own thread, and goes again.

When the store is down (a PostgreSQL restart, a full disk) the batch stays at the head of the buffer and
is retried with backoff; new ops keep buffering until `max_buffered`, after which further ops are dropped
and counted (`gateway_records_dropped_total`). Audio never waits on any of this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from typing import Any

from gateway.log import fields
from gateway.records import metrics as rm
from gateway.records.store import Op, Store, StoreError

log = logging.getLogger("gateway.records")


class RecordWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_buffered: int = 100_000,
        batch: int = 500,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.store = store
        self.max_buffered = max_buffered
        self.batch = batch
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._buf: deque[Op] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.store_ok = True
        self.written = 0
        self.dropped = 0
        # One thread: the store's connection is used in order, and batches commit in submission order.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="records-writer")

    # ------------------------------------------------------------------ the call path
    def submit(self, kind: str, data: dict[str, Any]) -> bool:
        """Queue one op; False (and counted) when the buffer is full. Never blocks."""
        if len(self._buf) >= self.max_buffered:
            self.dropped += 1
            rm.DROPPED.inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "record buffer full: dropping record writes",
                    extra=fields(dropped=self.dropped, buffered=len(self._buf)),
                )
            return False
        self._buf.append((kind, data))
        self._idle.clear()
        self._wake.set()
        return True

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.migrate)
        rm.BUFFERED.set_function(lambda: len(self._buf))
        self._task = asyncio.create_task(self._run(), name="records-writer")

    async def run_in_store(self, fn: Any, *args: Any) -> Any:
        """Run a store read or an erasure on the writer's thread (after the writes queued before it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a bounded wait by design
        """Wait until everything submitted so far is written (or `timeout`); True when it was."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        if not await self.flush(timeout):
            log.error("records not written at shutdown", extra=fields(buffered=len(self._buf)))
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.store.close)
        self._pool.shutdown(wait=False)

    # ------------------------------------------------------------------ the task
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.retry_initial_s
        while True:
            if not self._buf:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._buf), self.batch)
            ops = [self._buf[i] for i in range(n)]
            try:
                await loop.run_in_executor(self._pool, self.store.apply, ops)
            except StoreError as exc:
                rm.WRITE_ERRORS.inc()
                if self.store_ok:
                    log.error(
                        "record store unavailable: buffering",
                        extra=fields(error=str(exc), buffered=len(self._buf)),
                    )
                self.store_ok = False
                rm.STORE_UP.set(0)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            except Exception as exc:  # an op the store refuses for good (a bug): drop it, keep the rest
                log.exception("record batch refused: writing one op at a time", extra=fields(error=str(exc)))
                await self._one_by_one(ops)
                continue
            for _ in range(n):
                self._buf.popleft()
            self.written += n
            rm.WRITTEN.inc(n)
            if not self.store_ok:
                log.info("record store back", extra=fields(buffered=len(self._buf)))
            self.store_ok = True
            rm.STORE_UP.set(1)
            backoff = self.retry_initial_s

    async def _one_by_one(self, ops: list[Op]) -> None:
        loop = asyncio.get_running_loop()
        for op in ops:
            self._buf.popleft()
            try:
                await loop.run_in_executor(self._pool, self.store.apply, [op])
                self.written += 1
            except Exception as exc:
                self.dropped += 1
                rm.DROPPED.inc()
                log.error("record op refused by the store", extra=fields(kind=op[0], error=str(exc)))
