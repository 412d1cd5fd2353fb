"""Dialogue engine: what the agent says or does next, from the profile's `dialogue` and `knowledge`.

No I/O and no clock, so the same conversation always gives the same answers. It keeps one call's state:
a yes/no question waiting for its answer, or a request waiting for a slot ("What day would suit you?").

The rules that keep the agent from doing the wrong thing:
- an intent is chosen only on one of its keywords or a close example, never on a vague likeness, and an
  intent's `excludes` rule it out (booking is never chosen when "cancel" was said);
- when two intents fit about equally, the agent asks which one was meant instead of picking;
- every action with consequences (an intent with `confirm`) is put to the caller as a yes/no question
  first, and done only after a clear yes: a "no", or anything that is neither, never acts;
- a question is answered only from the knowledge; when nothing there answers it, the agent says so and
  offers a transfer (again as a yes/no question) instead of making something up.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from .asr import normalise
from .knowledge import index_for
from .profiles import EngineProfile, Intent, ToolCall, TransferOffer
from .understanding import Scored, Slots, contains_phrase, slots, terms, yes_or_no

# `Say exactly: "..."` in response instructions: the gateway's greeting contract (docs/gateway.md).
_SAY_EXACTLY = re.compile(r'say\s+exactly\s*:\s*["“](?P<text>.*?)["”]\s*$', re.IGNORECASE | re.DOTALL)
# An intent needs this score (0..1); a keyword alone gives KEYWORD_SCORE, a close example more.
ACT_THRESHOLD = 0.55
KEYWORD_SCORE = 0.6
EXAMPLE_FLOOR = 0.75  # word-sequence likeness an example needs to count without a keyword
# When the runner-up intent is this close to the best, the agent asks which one was meant.
MARGIN = 0.15
OUT_OF_SCOPE = "out_of_scope"
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
    # What the agent understood, for the log and the held-out measurement: "answer", "confirm", "act",
    # "declined", "ask", "clarify", "knowledge", "out_of_scope", "fallback", "repeat".
    kind: str = "fallback"
    fields: dict[str, str] = field(default_factory=dict, compare=False)


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


@dataclass
class Pending:
    """A request waiting for the caller: a yes/no answer (`confirm`) or a missing slot (`ask`)."""

    intent: Intent
    slots: Slots
    kind: str  # "confirm" | "ask"
    question: str


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
        self.pending: Pending | None = None
        self.instructions = profile.instructions
        self._acted: dict[str, Slots] = {}  # intent name -> the slots it was done with (after_tool fields)

    # ------------------------------------------------------------------ understanding
    def scores(self, text: str) -> list[Scored]:
        """Every intent's score for what the caller said, best first (ties: profile order)."""
        words = normalise(text)
        out: list[Scored] = []
        for index, intent in enumerate(self.dialogue.intents):
            if any(contains_phrase(words, x) for x in intent.excludes):
                continue
            keyword = any(contains_phrase(words, k) for k in intent.keywords)
            likeness = max(
                (
                    SequenceMatcher(None, words, ex, autojunk=False).ratio()
                    for i, ex in self._examples
                    if i is intent
                ),
                default=0.0,
            )
            score = max(
                KEYWORD_SCORE + 0.4 * likeness if keyword else 0.0,
                likeness if likeness >= EXAMPLE_FLOOR else 0.0,
            )
            if score > 0:
                out.append((score, -index, Scored(intent.name, round(min(1.0, score), 3), keyword)))
        out.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [s for _score, _i, s in out]

    def match(self, text: str) -> Intent | None:
        """The one intent the words clearly ask for, or None (nothing, or two alike)."""
        ranked = [s for s in self.scores(text) if s.score >= ACT_THRESHOLD]
        if not ranked or (len(ranked) > 1 and ranked[0].score - ranked[1].score < MARGIN):
            return None
        return self._intent(ranked[0].name)

    def _intent(self, name: str | None) -> Intent | None:
        return next((i for i in self.dialogue.intents if i.name == name), None)

    # ------------------------------------------------------------------ answering
    def answer(self, text: str, tools: set[str], instructions: str | None = None) -> Plan:
        """Reply to what the caller said. A tool the session did not offer is never called."""
        if instructions is not None:
            self.instructions = instructions
        words = normalise(text)
        if not words:
            return Plan(reply=self.dialogue.fallback_reply, kind="fallback")
        pending, self.pending = self.pending, None
        heard = slots(text)
        if pending is not None and pending.kind == "confirm":
            said = yes_or_no(text)
            ranked = [
                s for s in self.scores(text) if s.score >= ACT_THRESHOLD and s.name != pending.intent.name
            ]
            if said is True and not ranked:
                return self._act(pending.intent, pending.slots, tools)
            if said is False and not ranked:
                return Plan(reply=pending.intent.declined_reply, intent=pending.intent.name, kind="declined")
            if said is None and not ranked and not self._knowledge_hit(text):
                self.pending = pending  # still waiting for the answer
                return Plan(
                    reply=_fill(self.dialogue.yes_no_reply, {"question": pending.question}),
                    intent=pending.intent.name,
                    kind="repeat",
                )
            # Something else entirely (a new request, a question): the old proposal lapses, unanswered.
        if pending is not None and pending.kind == "ask":
            merged = pending.slots.merged(heard)
            if any(merged.has(n) for n in pending.intent.needs) and not self.match(text):
                return self._propose(pending.intent, merged, tools)
        ranked = [s for s in self.scores(text) if s.score >= ACT_THRESHOLD]
        if len(ranked) > 1 and ranked[0].score - ranked[1].score < MARGIN:
            options = [self._label(n) for n in (ranked[0].name, ranked[1].name)]
            return Plan(
                reply=_fill(self.dialogue.clarify_reply, {"options": f"{options[0]}, or {options[1]}"}),
                kind="clarify",
            )
        if ranked:
            intent = self._intent(ranked[0].name)
            assert intent is not None
            return self._propose(intent, heard, tools)
        if not terms(text):
            # Only a yes or a no (or words that carry nothing) with no question pending: nothing to act
            # on and nothing to look up, so ask again rather than answer at random.
            return Plan(reply=self.dialogue.fallback_reply, kind="fallback")
        hit = index_for(self.profile.knowledge, self.instructions or "").answer(text)
        if hit is not None:
            return Plan(
                reply=hit.passage.answer,
                kind="knowledge",
                intent="knowledge",
                fields={"passage": hit.passage.label},
            )
        return self._out_of_scope(tools)

    def _label(self, name: str) -> str:
        intent = self._intent(name)
        return (intent.label if intent and intent.label else name.replace("_", " ")) if intent else name

    def _knowledge_hit(self, text: str) -> str | None:
        hit = index_for(self.profile.knowledge, self.instructions or "").answer(text)
        return hit.passage.answer if hit is not None else None

    def _propose(self, intent: Intent, heard: Slots, tools: set[str]) -> Plan:
        """An intent the caller asked for: ask for a missing slot, put it as a yes/no question, or do it."""
        values = heard.fields()
        missing = [n for n in intent.needs if not heard.has(n)]
        if missing and intent.ask:
            self.pending = Pending(intent, heard, "ask", intent.ask)
            return Plan(reply=_fill(intent.ask, values), intent=intent.name, kind="ask", fields=values)
        if intent.confirm:
            if intent.tool is not None and intent.tool.name not in tools:
                # It could not be done here anyway: say what it would have said, never ask for nothing.
                return Plan(reply=self.dialogue.fallback_reply, intent=intent.name, kind="fallback")
            question = _fill(intent.confirm, values)
            self.pending = Pending(intent, heard, "confirm", question)
            return Plan(reply=question, intent=intent.name, kind="confirm", fields=values)
        return self._act(intent, heard, tools)

    def _act(self, intent: Intent, heard: Slots, tools: set[str]) -> Plan:
        values = heard.fields()
        self._acted[intent.name] = heard
        reply = _fill(intent.reply, values) if intent.reply else None
        if intent.tool is not None and intent.tool.name in tools:
            return Plan(reply=reply, tool=intent.tool, intent=intent.name, kind="act", fields=values)
        if intent.tool is not None:
            return Plan(reply=reply or self.dialogue.fallback_reply, intent=intent.name, kind="fallback")
        return Plan(
            reply=reply or self.dialogue.fallback_reply, intent=intent.name, kind="act", fields=values
        )

    def _out_of_scope(self, tools: set[str]) -> Plan:
        offer: TransferOffer = self.dialogue.out_of_scope
        if offer.tool is None or offer.tool.name not in tools:
            return Plan(reply=offer.no_transfer_reply, intent=OUT_OF_SCOPE, kind="out_of_scope")
        intent = Intent(
            name=OUT_OF_SCOPE,
            confirm=offer.confirm,
            reply=offer.reply,
            tool=offer.tool,
            reply_after_tool=offer.reply_after_tool,
            declined_reply="All right. Is there anything else I can help you with?",
        )
        self.pending = Pending(intent, Slots(), "confirm", offer.confirm)
        return Plan(reply=offer.confirm, intent=OUT_OF_SCOPE, kind="out_of_scope")

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
                reply=_fill(self.dialogue.tool_failed_reply, {**result, "error": error}),
                intent=intent_name,
                kind="answer",
            )
        intent = self._intent(intent_name)
        if intent is None and intent_name == OUT_OF_SCOPE:
            offer = self.dialogue.out_of_scope
            template = offer.reply_after_tool
        else:
            template = intent.reply_after_tool if intent is not None else None
        if not template:
            return Plan(intent=intent_name, kind="answer")  # nothing more to say (e.g. after end_call)
        values = {**self._acted.get(intent_name or "", Slots()).fields(), **result}
        return Plan(reply=_fill(template, values), intent=intent_name, kind="answer")

    def opening(self) -> Plan:
        """A response requested before the caller said anything: the profile's greeting."""
        return Plan(reply=self.profile.greeting or self.dialogue.fallback_reply, kind="answer")


def limit_words(text: str | None, max_tokens: Any) -> str | None:
    """A reply cut to `max_output_tokens` (the engine counts a word as a token), at a word boundary."""
    if text is None or not isinstance(max_tokens, int) or max_tokens <= 0:
        return text
    words = text.split()
    if len(words) <= max_tokens:
        return text
    return " ".join(words[:max_tokens])
