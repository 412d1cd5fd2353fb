"""Agent audio towards the caller: the queue, paced playout, and FreeSWITCH's file-mode player, under
one driver task per call.

Paced playout: the far end plays what it receives back-to-back in real time and cannot take back what
it holds, so the driver keeps only `lead_ms` of audio in flight (`PlayoutClock`). Barge-in (`interrupt`)
drops the queue at once: control jumps the queue.

File mode (the upstream MIT mod_audio_stream): every message becomes a temp file that FreeSWITCH
announces in a `mod_audio_stream::play` event; the driver plays those files in arrival order with
`uuid_broadcast`, and barge-in forgets the files not yet handed over and breaks the current one.

Marks (Twilio): after every `MARK_EVERY_MS` of a reply and at its end the driver sends a `mark`; the
far end echoes it once everything before it has played, which gives the heard point of the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.audio.formats import CallAudio
from gateway.audio.playout import PlayoutClock
from gateway.call.transport import MediaTransport

log = logging.getLogger("gateway.playback")

MARK_EVERY_MS = 500.0


class FileBroadcaster(Protocol):  # what file mode needs from call control
    async def play(self, path: str) -> None: ...
    async def displace(self, path: str) -> None: ...
    async def stop_displace(self, path: str) -> None: ...
    async def flush_playback(self) -> None: ...


DISPLACE_EARLY_S = 0.005  # start the next file this much before the current ends (ESL round trip)


@dataclass
class _Counts:
    frames_out: int = 0
    bytes_out: int = 0


@dataclass
class _Segment:
    item_id: str | None
    audio: bytearray


class Playback:
    def __init__(self, transport: MediaTransport, audio: CallAudio, clock: Callable[[], float], *,
                 lead_ms: float, frame_ms: float, more_coming: Callable[[], bool] = lambda: False,
                 on_first_audio: Callable[[str | None], None] = lambda item: None,
                 on_underrun: Callable[[], None] = lambda: None,
                 files: FileBroadcaster | None = None, max_chunk_ms: float | None = None,
                 stats: _Counts | None = None) -> None:
        self.transport = transport
        self.audio = audio
        self.clock = PlayoutClock(clock, lead_ms=lead_ms, frame_ms=frame_ms)
        self._frame_len = audio.frame_bytes(frame_ms)
        # File mode: FreeSWITCH leaves ~100 ms without audio between two broadcast files (measured on
        # 1.10.12 with the upstream module: a 3.56 s greeting took 5.44 s in 200 ms files). So each file
        # takes all the audio there is, up to max_chunk_ms: a reply the model generated ahead becomes one
        # or two files instead of one per 200 ms.
        self._max_chunk_len = audio.frame_bytes(max_chunk_ms) if max_chunk_ms else self._frame_len
        self._more_coming = more_coming
        self._on_first_audio = on_first_audio
        self._on_underrun = on_underrun
        self._files = files
        self._out: deque[_Segment] = deque()
        self._file_queue: deque[str] = deque()
        self._file_ms: deque[float] = deque()  # durations of the files sent, in order
        self._file_end = 0.0  # loop time at which the file playing now ends (displace)
        self._displacing: list[tuple[str, float]] = []
        self.gapless = files is not None and hasattr(files, "displace")
        # The driver's wake-up: a bare future and one timer handle. Not asyncio.wait_for on an Event,
        # which wraps the wait in a new task every time the driver paces a frame.
        self._waiter: asyncio.Future[None] | None = None
        # The inline fast path (`pump_next` ... `pump`): audio queued in between is sent by the caller's
        # own task, so it wakes no driver. Plain flags, not an asyncio.Lock and `current_task()`: they
        # ran on every frame and cost ~3 us of the ~25 us the call-core renovation added per frame pair
        # (docs/benchmarks.md).
        self._pump_pending = False
        self._sending = False  # one sender at a time: the driver or the inline fast path
        # Set when the queue runs empty, while `played_out` waits for that (an Event per frame cost two
        # method calls per frame for a wait that happens once per call).
        self._idle: asyncio.Event | None = None
        self._marks: dict[str, tuple[str | None, float]] = {}  # mark name -> (item, sent ms at the mark)
        self._mark_seq = 0
        self._last_mark_ms = 0.0
        self._confirmed: tuple[str | None, float] = (None, 0.0)
        # The call's own counters (CallStats): live calls' frames out are summed at each metrics scrape
        # and shown by the admin API while the call runs.
        self.stats: _Counts = stats if stats is not None else _Counts()
        self.accepting = True

    # ------------------------------------------------------------------ queries
    def busy(self) -> bool:
        """Audio queued here or still playing at the far end."""
        return bool(self._out) or self.clock.queued_ms() > 0

    def queued_items(self) -> list[str]:
        return [seg.item_id for seg in self._out if seg.item_id]

    # ------------------------------------------------------------------ input
    def enqueue(self, item_id: str | None, audio: bytes) -> None:
        """Agent audio in the transport's encoding."""
        if not self.accepting or not audio:
            return
        if self._out and self._out[-1].item_id == item_id:
            self._out[-1].audio += audio
        else:
            self._out.append(_Segment(item_id, bytearray(audio)))
        if not self._pump_pending:
            self._wake()

    def reply_done(self) -> None:
        """The model finished a reply: a partial last frame may go now."""
        self._wake()

    def on_play_file(self, path: str) -> None:
        """File mode: FreeSWITCH wrote one more chunk to a file."""
        self._file_queue.append(path)
        self._wake()

    def on_mark(self, name: str) -> None:
        """The far end played everything up to mark `name`."""
        mark = self._marks.pop(name, None)
        if mark is not None:
            self._confirmed = mark
            for older in [n for n, m in self._marks.items() if m[0] == mark[0] and m[1] <= mark[1]]:
                del self._marks[older]

    # ------------------------------------------------------------------ control (jumps the queue)
    def interrupt(self) -> tuple[str | None, int, list[str]]:
        """Barge-in: drop what is queued; returns (item being played, ms of it heard, queued items)."""
        item_id = self.clock.item_id
        queued = self.queued_items()
        heard = self.clock.interrupt()
        if self.transport.echoes_marks and item_id is not None:
            confirmed_item, confirmed_ms = self._confirmed
            heard = int(confirmed_ms) if confirmed_item == item_id else 0
        self._out.clear()
        self._file_queue.clear()
        self._marks.clear()
        self.audio.reset_output()
        self._wake()
        return item_id, heard, queued

    def stop_new(self) -> None:
        """Before the call moves or ends: nothing more is queued or sent; what is in flight plays out."""
        self.accepting = False
        self._out.clear()
        self._wake()

    async def flush_files(self) -> None:
        self._file_queue.clear()
        self._file_ms.clear()
        self._file_end = 0.0
        now = asyncio.get_running_loop().time()
        playing = [(p, end) for p, end in self._displacing if end > now]
        self._displacing = []
        if self._files is not None:
            for path, _ in playing:
                with contextlib.suppress(Exception):  # it may have ended on its own meanwhile
                    await self._files.stop_displace(path)
            await self._files.flush_playback()

    async def played_out(self, limit_s: float, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                         now: Callable[[], float] | None = None) -> bool:
        """Wait until everything queued has been sent and the far end has played it (the playout clock
        says when). False when `limit_s` passed first."""
        loop_now = now or asyncio.get_running_loop().time
        deadline = loop_now() + limit_s
        while loop_now() < deadline:
            if not self._out and not self._file_queue:
                rest = self.clock.queued_ms() / 1000.0
                if rest <= 0:
                    return True
                await sleep(min(rest, max(0.0, deadline - loop_now())))
                continue
            idle = self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(idle.wait(), max(0.001, deadline - loop_now()))
            except TimeoutError:
                return False
            finally:
                self._idle = None
        return not self.busy()

    # ------------------------------------------------------------------ the driver
    def pump_next(self) -> None:
        """The caller's task is about to queue audio (caller audio into an in-process model such as
        the null model) and calls `pump` right after: what is queued until then wakes no driver. A
        task wake per frame per call is what the inline path saves."""
        self._pump_pending = True

    async def pump(self) -> None:
        """The inline fast path: send the frames due now from the caller's own task (the media
        transport's receive loop calls this after each caller frame, so in the steady state the
        driver below sleeps). What does not fit under the lead is left to the driver's timer."""
        self._pump_pending = False
        out = self._out
        if out and not self._sending and self.clock.wants_frame():
            self._sending = True
            try:
                while True:
                    if not await self._send_frame():
                        break  # a partial frame while the model is still talking
                    if not out or not self.clock.wants_frame():
                        break
            finally:
                self._sending = False
        if out or self._file_queue:
            self._wake()  # more than the lead, or a partial frame: the driver's timer paces it
        elif self._idle is not None:
            self._idle.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waits: list[float] = []
            if self._file_queue and self._files is not None:
                start_at = self._file_end - DISPLACE_EARLY_S if self.gapless else 0.0
                if loop.time() >= start_at:
                    await self._play_next_file(loop.time())
                    continue
                waits.append(start_at - loop.time())
            if self._out:
                if self._sending:
                    pass  # the inline path is sending: it wakes us for what it leaves
                elif self.clock.wants_frame():
                    self._sending = True
                    try:
                        sent = await self._send_frame()
                    finally:
                        self._sending = False
                    if sent:
                        continue
                    # a partial frame while the model is still talking: wait for the rest, not chop
                else:
                    waits.append(self.clock.seconds_until_room())
            elif not self._file_queue and self._idle is not None:
                self._idle.set()
            await self._sleep(min(waits) if waits else None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, delay: float | None) -> None:
        """Until `_wake` or `delay` seconds, whichever is first. Wakes before this call do not count:
        the driver decided what to do after them."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(delay, _resolve, waiter) if delay is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _play_next_file(self, now: float) -> None:
        assert self._files is not None
        path = self._file_queue.popleft()
        duration_s = (self._file_ms.popleft() if self._file_ms else 0.0) / 1000.0
        try:
            if self.gapless:
                # Each broadcast file costs ~120 ms without audio on FreeSWITCH 1.10.12 (the park loop
                # between two applications); displace files started back to back do not.
                await self._files.displace(path)
                self._file_end = max(now, self._file_end) + duration_s
                self._displacing = [(p, end) for p, end in self._displacing if end > now]
                self._displacing.append((path, self._file_end))
            else:
                await self._files.play(path)
        except Exception as exc:  # one lost chunk must not stop the call's playback
            log.warning("file playback failed", extra={"error": str(exc)})

    async def _send_frame(self) -> bool:
        seg = self._out[0]
        if len(seg.audio) < self._frame_len and len(self._out) == 1 and self._more_coming():
            return False
        n = max(self._frame_len, min(len(seg.audio), self._max_chunk_len))
        if len(seg.audio) <= n:  # the whole segment: one copy, not a slice and a delete
            frame = bytes(seg.audio)
            segment_done = True
            self._out.popleft()
        else:
            frame = bytes(seg.audio[:n])
            del seg.audio[:n]
            segment_done = False
        clock = self.clock
        playing = clock.item_id
        first = playing is None or seg.item_id != playing
        if first:
            clock.begin_item(seg.item_id)
            self._last_mark_ms = 0.0
        if not await self.transport.send_audio(frame):
            self._out.clear()
            return True
        ms = len(frame) / self.audio.bytes_per_ms
        if clock.on_sent(ms, continuing=not first):
            self._on_underrun()
        stats = self.stats
        stats.frames_out += 1
        stats.bytes_out += len(frame)
        if self._files is not None:
            self._file_ms.append(ms)
        if first:
            self._on_first_audio(seg.item_id)
        if self.transport.echoes_marks:
            sent = self.clock.item_sent_ms()
            if segment_done or sent - self._last_mark_ms >= MARK_EVERY_MS:
                self._mark_seq += 1
                name = f"{seg.item_id or 'audio'}:{self._mark_seq}"
                self._marks[name] = (seg.item_id, sent)
                self._last_mark_ms = sent
                await self.transport.mark(name)
        return True


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
