"""Helpers shared by the record tests (a module with its own name, not conftest: `from conftest import`
picks whichever area's conftest was imported last when the whole suite runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.settings import DEFAULT_PROFILES_DIR

GW_HOST = "127.0.0.162"  # this area's loopback address (media + admin)
TOKEN = "records-token"


def profiles_dir(tmp: Path, **records: Any) -> Path:
    """The shipped profiles with a `records:` block added to front-desk."""
    out = tmp / "profiles"
    out.mkdir(exist_ok=True)
    for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        if data.get("name", src.stem) == "front-desk" and records:
            data["records"] = records
        (out / src.name).write_text(yaml.safe_dump(data))
    return out
