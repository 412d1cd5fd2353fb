"""Dialogue engine: what the agent says or does next, from the profile's `dialogue` section.

Pure functions of (profile, what the caller said, which tools the session offers): no I/O, no clock,
so the same conversation always gives the same answers.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from .asr import normalise
from .profiles import EngineProfile, Intent, ToolCall

# `Say exactly: "..."` in response instructions: the gateway's greeting contract (docs/gateway.md).
_SAY_EXACTLY = re.compile(r'say\s+exactly\s*:\s*["“](?P<text>.*?)["”]\s*$', re.IGNORECASE | re.DOTALL)
MATCH_THRESHOLD = 0.6
# `Caller name: Maria Lopez` on a line of its own in the session instructions: the gateway's caller memory
# (docs/records.md). Only letters, spaces, hyphens and apostrophes: the name is spoken, never markup.
_WORD = r"[^\W\d_]+(?:['-][^\W\d_]+)*"
_CALLER_NAME = re.compile(rf"^Caller name:[ \t]*(?P<name>{_WORD}(?: {_WORD}){{0,3}})[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    """One response: an optional spoken reply, then an optional tool call."""

    reply: str | None = None
    tool: ToolCall | None = None
    intent: str | None = None


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(template: str, values: dict[str, Any]) -> str:
    """`str.format_map` that leaves unknown fields empty instead of raising (templates come from YAML)."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        return template.format_map(_Blank({k: v for k, v in values.items() if k in fields}))
    except (ValueError, IndexError, AttributeError):
        return template


def say_exactly(instructions: str | None) -> str | None:
    if not instructions:
        return None
    m = _SAY_EXACTLY.search(instructions.strip())
    return m.group("text").strip() if m else None


def caller_name(instructions: str | None) -> str | None:
    """The caller's name from the session instructions' `Caller name:` line, or None."""
    if not instructions:
        return None
    m = _CALLER_NAME.search(instructions)
    return m.group("name").strip() if m else None


def greet_by_name(greeting: str | None, name: str | None) -> str | None:
    """The opening words for a caller the gateway remembers: "Hello Maria. " before the greeting."""
    if not greeting or not name:
        return greeting
    return f"Hello {name.split()[0]}. {greeting}"


class DialogueEngine:
    def __init__(self, profile: EngineProfile) -> None:
        self.profile = profile
        self.dialogue = profile.dialogue
        self._examples = [
            (intent, normalise(ex))
            for intent in self.dialogue.intents
            for ex in intent.examples
            if normalise(ex)
        ]

    def match(self, text: str) -> Intent | None:
        words = normalise(text)
        if not words:
            return None
        best: tuple[float, int] = (0.0, -1)
        for i, (_intent, example) in enumerate(self._examples):
            score = SequenceMatcher(None, words, example, autojunk=False).ratio()
            if score > best[0]:
                best = (score, i)
        for intent in self.dialogue.intents:
            if any(k.lower() in words for k in intent.keywords) and best[0] < MATCH_THRESHOLD:
                return intent
        return self._examples[best[1]][0] if best[0] >= MATCH_THRESHOLD else None

    def answer(self, text: str, tools: set[str]) -> Plan:
        """Reply to what the caller said. A tool the session did not offer is never called."""
        intent = self.match(text)
        if intent is None:
            return Plan(reply=self.dialogue.fallback_reply)
        if intent.tool is not None and intent.tool.name in tools:
            return Plan(reply=intent.reply, tool=intent.tool, intent=intent.name)
        return Plan(reply=intent.reply or self.dialogue.fallback_reply, intent=intent.name)

    def after_tool(self, intent_name: str | None, output: str) -> Plan:
        """Speak about a tool's result: the intent's `reply_after_tool` on success (fields of the output
        JSON fill `{placeholders}`), the failure template with the error otherwise."""
        try:
            result = json.loads(output)
        except ValueError:
            result = {"output": output}
        if not isinstance(result, dict):
            result = {"output": result}
        if result.get("ok") is False:
            error = str(result.get("error") or "unknown error")
            return Plan(
                reply=_fill(self.dialogue.tool_failed_reply, {**result, "error": error}), intent=intent_name
            )
        intent = next((i for i in self.dialogue.intents if i.name == intent_name), None)
        if intent is None or not intent.reply_after_tool:
            return Plan(intent=intent_name)  # nothing more to say (e.g. after end_call)
        return Plan(reply=_fill(intent.reply_after_tool, result), intent=intent_name)

    def opening(self) -> Plan:
        """A response requested before the caller said anything: the profile's greeting."""
        return Plan(reply=self.profile.greeting or self.dialogue.fallback_reply)
