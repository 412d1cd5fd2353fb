"""Agent profile folders for tests: the shipped profiles plus copies of front-desk, one per tenant desk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.settings import DEFAULT_PROFILES_DIR


def desk_profiles(tmp: Path, desks: dict[str, str], **overrides: Any) -> Path:
    """`tmp/profiles`: every shipped profile, and per `desks` entry (name -> dialled number) a copy of
    front-desk with that name and number, plus `overrides` (top-level profile keys)."""
    out = tmp / "profiles"
    out.mkdir()
    for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
        (out / src.name).write_text(src.read_text())
    base = yaml.safe_load((DEFAULT_PROFILES_DIR / "front-desk.yaml").read_text())
    for name, number in desks.items():
        doc = base | {"name": name, "numbers": [number]} | overrides
        (out / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return out
