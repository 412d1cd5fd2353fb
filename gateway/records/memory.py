"""Caller memory: a rolling summary and the last N turns, carried into the caller's next call.

Everything in memory was redacted before it was stored (it comes from the call's redacted turns), so
the instructions of a later call never hold what the policy removed.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.records.policy import MemoryPolicy

MAX_SUMMARIES = 5  # the rolling summary keeps this many earlier calls, newest last
_NAME_NOTE = re.compile(r"\(name: ([^()\n]{1,60})\)")


def next_memory(
    prev: dict[str, Any] | None, turns: list[dict[str, Any]], record: dict[str, Any], policy: MemoryPolicy
) -> dict[str, Any]:
    lines = [s for s in (prev or {}).get("summary", "").split("\n") if s.strip()]
    line = record.get("summary", "")
    name = (record.get("slots") or {}).get("name")
    if name and f"name: {name}" not in line:
        line = f"{line} (name: {name})"
    lines = (lines + [line])[-MAX_SUMMARIES:]
    kept = [{"role": t["role"], "text": t["text"]} for t in turns if t.get("text")]
    recent = ((prev or {}).get("turns", []) + kept)[-policy.turns :] if policy.turns else []
    return {"summary": "\n".join(lines), "turns": recent}


def memory_instructions(mem: dict[str, Any], policy: MemoryPolicy) -> str:
    """The block appended to the session instructions at call start."""
    parts = [f"\n\nWhat you know about this caller from {mem.get('calls', 1)} earlier call(s):"]
    name = caller_name(mem)
    if name:
        # One well-defined line: the embedded engine reads it to greet the caller by name
        # (gateway/engine/dialogue.py `caller_name`); an OpenAI model reads it as an instruction.
        parts.append(f"Caller name: {name}")
    if mem.get("summary"):
        parts.append("Summary: " + mem["summary"].replace("\n", " | "))
    turns = mem.get("turns", [])[-policy.turns :] if policy.turns else []
    if turns:
        parts.append("Last turns:")
        parts += [f"- {t['role']}: {t['text']}" for t in turns]
    text = "\n".join(parts)
    return text[: policy.max_chars]


def caller_name(mem: dict[str, Any]) -> str | None:
    """The caller's name from the newest earlier call that learned it (the `(name: ...)` notes that
    `next_memory` adds to the rolling summary)."""
    found = _NAME_NOTE.findall(mem.get("summary") or "")
    return found[-1].strip() if found else None
