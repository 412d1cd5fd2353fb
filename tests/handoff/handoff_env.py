"""Addresses, secrets and the test profile of the handoff tests (this area owns 127.0.4.0/24)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HOST = "127.0.4.1"
ESL_HOST = "127.0.4.2"
STREAM_TOKEN = "handoff-stream-token"
READ_TOKEN = "desk-read-secret-0123456789"
CONTROL_TOKEN = "ops-control-secret-0123456789"
METRICS_TOKEN = "prom-metrics-secret-0123456789"
WEBHOOK_SECRET = "handoff-webhook-secret-0123456789"

PROFILE: dict[str, Any] = {
    "name": "desk",
    "instructions": "You are a front desk.",
    "greeting": "Hello.",
    "tools": ["escalate", "transfer_call", "end_call"],
    "transfer_targets": {"billing": "2001", "human": "sip:+15550199@trunk"},
    "escalation_target": "human",
    "handoff": {
        "targets": [{"target": "billing", "queue": "billing-queue", "timeout_s": 8},
                    {"target": "human", "timeout_s": 8}],
        "attributes": {"skill": "billing", "priority": 5, "vip": True, "language": "en-US"},
        "last_turns": 4,
        "max_hops": 2,
        "mode": "blind",
    },
}


def write_profile(directory: Path, **changes: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {**PROFILE, **changes}
    (directory / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))
    return directory


