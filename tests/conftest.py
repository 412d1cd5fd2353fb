"""Suite-wide switches. Each area keeps its own fixtures in tests/<area>/conftest.py."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Real-FreeSWITCH tests run only where an operator points us at one (CI has none).
    if os.environ.get("FREESWITCH_ESL"):
        return
    skip = pytest.mark.skip(reason="no FreeSWITCH: set FREESWITCH_ESL=host:port:password to run")
    for item in items:
        if "freeswitch" in item.keywords:
            item.add_marker(skip)
