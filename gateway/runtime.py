"""Process-level tuning shared by the long-running programs (`gateway serve`, `gateway model`)."""

from __future__ import annotations

import gc


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
