"""The freeswitch_conf area imports the real `gateway` package (see tests/esl/conftest.py for why the
repository root must come first on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("gateway"), "__file__", "") is None:
    for _name in [n for n in sys.modules if n == "gateway" or n.startswith("gateway.")]:
        del sys.modules[_name]
