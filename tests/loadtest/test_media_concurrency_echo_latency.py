"""Echo latency of `loadtest media` (null-echo): measured against the real send time of every frame, and
split into the gateway's pass-through time and the delay that stalls add for the rest of a call."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from lt_helpers import free_tcp_port

from gateway.client.call import place_call
from loadtest.media import echo_delay_added_ms, echo_frame_latencies_ms, wait_ready

RATE = 8000
FRAME_BYTES = RATE * 20 // 1000 * 2


def _paced_sends(n: int, stall_at: int | None = None, stall_s: float = 0.0) -> list[float]:
    """Send times of a client pacing 20 ms frames (the first two together) that froze for `stall_s`
    before frame `stall_at`, then sent the overdue frames at once and went back on schedule."""
    t0, out = 100.0, []
    for k in range(n):
        due = t0 + max(0, k - 1) * 0.020
        if stall_at is not None and k >= stall_at:
            due = max(due, t0 + max(0, stall_at - 1) * 0.020 + stall_s)
        out.append(due)
    return out


def test_a_late_send_is_not_counted_as_gateway_latency():
    # The client froze 150 ms before the last frames of the question (its own stall, as under load);
    # the echo of each frame comes back 2 ms after that frame actually left.
    sends = _paced_sends(120, stall_at=100, stall_s=0.150)
    arrivals = [(t + 0.002, FRAME_BYTES) for t in sends]
    latencies = echo_frame_latencies_ms(arrivals, sends, RATE)
    assert len(latencies) == 120
    assert latencies == pytest.approx([2.0] * 120, abs=1e-6)


def test_echo_messages_of_any_size_map_to_the_frames_they_complete():
    sends = _paced_sends(6)
    # 1.5 frames, then 2.5 frames, then 2 frames: frames 0 / 1,2,3 / 4,5 complete at those arrivals
    a1, a2, a3 = sends[1] + 0.001, sends[3] + 0.001, sends[5] + 0.001
    arrivals = [(a1, FRAME_BYTES * 3 // 2), (a2, FRAME_BYTES * 5 // 2), (a3, FRAME_BYTES * 2)]
    got = echo_frame_latencies_ms(arrivals, sends, RATE)
    want = [a1 - sends[0], a2 - sends[1], a2 - sends[2], a2 - sends[3], a3 - sends[4], a3 - sends[5]]
    assert got == pytest.approx([w * 1000.0 for w in want], abs=1e-6)


def test_a_stall_longer_than_the_spare_lead_delays_the_rest_of_the_echo_and_is_reported_as_added():
    # 40 frames echoed 1 ms after sending, then the gateway froze for 100 ms: with a 60 ms lead the
    # far end had 40 ms queued, so it ran dry for 60 ms and every later echo is 60 ms later for good.
    latencies = [1.0] * 40 + [61.0] * 60
    assert echo_delay_added_ms(latencies) == pytest.approx(60.0)
    assert echo_delay_added_ms([1.0] * 100) == 0.0
    assert echo_delay_added_ms([1.0] * 5) is None  # too short to tell start from end


@pytest.mark.slow
async def test_echo_latency_from_a_real_gateway_is_causal_for_every_frame(serve):
    admin = free_tcp_port()
    gw = serve("serve", "--media-host", "127.0.0.1", "--admin-host", "127.0.0.1",
               "--admin-port", str(admin), "--model-backend", "null-echo",
               port_flag="--media-port", name="gateway")
    assert await wait_ready(f"http://127.0.0.1:{admin}/readyz", 30.0)
    t = np.arange(int(1.0 * RATE)) / RATE
    speech = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)  # 1 s of loud tone = 50 voiced frames

    async def one(i: int):
        return await place_call(f"ws://127.0.0.1:{gw.port}/stream/{uuid.uuid4()}", speech, rate=RATE,
                                metadata={"caller": f"+1415555{i:04d}", "callee": "+18005550100",
                                          "call_id": f"CA{i}", "worker": "t", "profile": "", "rate": RATE},
                                wait_for_greeting=False, max_duration=2.0, reply_timeout=5.0)

    summaries = await asyncio.gather(*(one(i) for i in range(8)))
    for s in summaries:
        assert not s.errors, s.errors
        # one recorded send time per frame put on the wire, in order
        assert len(s.send_times) == s.frames_sent >= 50
        assert s.send_times == sorted(s.send_times)
        # end of speech is the send time of the 50th (last voiced) frame, not a time taken after it
        assert s.speech_end_t == s.send_times[49]
        latencies = echo_frame_latencies_ms(s.reply_arrivals, s.send_times, RATE)
        assert len(latencies) == s.frames_received > 0
        # an echo cannot come back before its frame was sent
        assert min(latencies) >= 0.0


@pytest.mark.slow
async def test_during_a_media_run_a_full_collection_would_not_walk_the_generators_start_up_heap(
        serve, tmp_path):
    """A full (generation 2) collection stops the event loop, and so every call's sending at once, for
    as long as it walks the objects in generation 2; the generator's start-up heap (numpy, pydantic,
    httpx, ...) must not be among them while calls run."""
    import gc

    from loadtest.media import MediaLoad, run_media

    admin = free_tcp_port()
    gw = serve("serve", "--media-host", "127.0.0.1", "--admin-host", "127.0.0.1",
               "--admin-port", str(admin), "--model-backend", "null-echo",
               port_flag="--media-port", name="gateway")
    gc.collect()
    start_up = len(gc.get_objects(generation=2))
    assert start_up > 20000  # this process has the start-up heap the generator has
    walked: list[int] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.5)
            walked.append(len(gc.get_objects(generation=2)))

    watcher = asyncio.create_task(watch())
    load = MediaLoad(url=f"ws://127.0.0.1:{gw.port}", calls=4, concurrency=4, rate=8, model="null-echo",
                     ready_url=f"http://127.0.0.1:{admin}/readyz")
    result = await run_media(load, tmp_path / "run")
    watcher.cancel()
    assert result.steps[0].successful == 4, result.verdict
    assert len(walked) >= 4
    # while the calls ran, generation 2 held only what the run itself had promoted there
    assert max(walked[1:-1] or walked) < start_up / 4
    # and after the run the process collects as before (nothing left frozen)
    assert gc.get_freeze_count() == 0
