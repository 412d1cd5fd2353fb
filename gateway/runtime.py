"""Process-level tuning shared by the long-running programs (`gateway serve`, `gateway model`)."""

from __future__ import annotations

import gc
import time
from typing import Any


def freeze_startup_heap() -> None:
    """Take everything allocated during start-up out of the garbage collector's reach.

    Start-up leaves ~100,000 long-lived objects (numpy, the SDK's pydantic models, FastAPI, profiles,
    pre-rendered prompts). A full collection walks all of them with the event loop stopped: measured
    72-126 ms in `gateway serve`, longer than the 60 ms playout lead, so every live call's audio ran dry
    at the same instant and stayed that much late (docs/bench/loadtest.md, media plane). Frozen, the
    same collection walks only what calls allocate: 11-12 ms.
    """
    gc.collect()
    gc.freeze()


_counted: set[int] = set()  # histograms already fed (run_server may run more than once in one process)


def count_gc_pauses(histogram: Any) -> None:
    """Time every collection into `histogram` (labelled by generation): a collection stops the event
    loop, so its length is a gap in every live call's audio. One clock read and one observation per run."""
    if id(histogram) in _counted:
        return
    _counted.add(id(histogram))
    started = [0.0]
    by_generation = [histogram.labels(generation=str(g)) for g in range(3)]
    clock = time.perf_counter

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = clock()
        else:
            by_generation[info["generation"]].observe(clock() - started[0])

    gc.callbacks.append(on_gc)
