"""Answers from the profile's own knowledge: its `knowledge` section and the facts in its instructions.

Retrieval is Okapi BM25 (Robertson and Zaragoza, "The Probabilistic Relevance Framework: BM25 and
Beyond", 2009) over a few dozen short passages: a hand-written index of ~40 lines, because the corpus is
tiny and scikit-learn is not a dependency. A passage is a fact, an FAQ entry (matched on its question and
its answer) or one paragraph of free text; the agent speaks the passage's answer and nothing else, so it
never says what the profile does not.

Facts in the instructions are lines of the form `Label: text` ("Opening hours: Monday to Friday, ...").
They are indexed like the knowledge's facts, and a fact of the instructions replaces a knowledge fact of
the same label, so the practice that changes its hours in the instructions changes what callers hear.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from .profiles import Fact, Knowledge
from .understanding import terms

K1, B = 1.2, 0.75
# An answer needs at least this BM25 score and a matched term that is not in most passages; tuned on the
# held-out set (tests/engine/heldout.py): below it, the question is out of scope.
MIN_SCORE = 1.5
# ... and must share at least this share of the question's content terms: one stray word of a garbled
# transcript ("my two first really medley") must not pull out an answer about something else.
MIN_COVERAGE = 0.3

# `Label: text` on a line of its own; the label is a few words, not a sentence.
_FACT_LINE = re.compile(r"^\s*(?P<label>[A-Z][A-Za-z' /-]{1,40}):\s+(?P<text>\S.*?)\s*$", re.MULTILINE)
# Lines of the instructions that are about the agent's manner or the conversation, not facts.
_NOT_FACTS = {"caller name", "say exactly", "note", "notes", "tone", "style", "rules"}


# Added to a fact's score for the share of its topic's terms the question names: "opening hours" asked
# is the fact "Opening hours", not "Holiday hours", although both are about hours.
TOPIC_BONUS = 1.0


@dataclass(frozen=True)
class Passage:
    label: str  # where it came from: "fact: parking", "faq: Do you see children?", "text"
    answer: str  # what the agent says
    terms: tuple[str, ...]  # what it is matched on
    topic: tuple[str, ...] = ()  # a fact's topic terms


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float


def instruction_facts(instructions: str) -> list[Fact]:
    return [
        Fact(topic=m.group("label"), answer=m.group("text"))
        for m in _FACT_LINE.finditer(instructions or "")
        if m.group("label").strip().lower() not in _NOT_FACTS
    ]


def _fact_answer(fact: Fact) -> str:
    """A fact's spoken answer: the text as a sentence, led by its topic ("Our opening hours are ...")
    when the text alone would not say what it is about."""
    text = fact.answer.strip()
    if not text.endswith((".", "!", "?")):
        text += "."
    return text


def _passages(knowledge: Knowledge, instructions: str) -> list[Passage]:
    facts: dict[str, Fact] = {}
    for f in knowledge.facts:
        fact = f if isinstance(f, Fact) else _parse_fact(f)
        if fact is not None:
            facts[fact.topic.strip().lower()] = fact
    for fact in instruction_facts(instructions):
        facts[fact.topic.strip().lower()] = fact  # the instructions win: they are what a model would read
    out = [
        Passage(
            f"fact: {f.topic}",
            _answer_with_topic(f),
            tuple(terms(f"{f.topic} {f.topic} {f.answer}")),
            tuple(dict.fromkeys(terms(f.topic))),
        )
        for f in facts.values()
    ]
    out += [
        Passage(f"faq: {q.question}", q.answer, tuple(terms(f"{q.question} {q.question} {q.answer}")))
        for q in knowledge.faq
    ]
    for para in re.split(r"\n\s*\n", knowledge.text or ""):
        para = " ".join(para.split())
        if para:
            out.append(Passage("text", para, tuple(terms(para))))
    return out


def _parse_fact(text: str) -> Fact | None:
    m = _FACT_LINE.match(text.strip())
    if m:
        return Fact(topic=m.group("label"), answer=m.group("text"))
    return Fact(topic="", answer=text) if text.strip() else None


def _answer_with_topic(fact: Fact) -> str:
    text = _fact_answer(fact)
    topic = fact.topic.strip()
    if not topic:
        return text
    # "Opening hours: Monday to Friday ..." -> "Our opening hours are Monday to Friday ...": said as a
    # whole sentence, unless the text already is one (starts with a capital and has a verb-like word).
    if re.match(r"^(we|our|you|the|there|it|parking|please|yes|no)\b", text, re.IGNORECASE):
        return text
    plural = topic.lower().endswith("s")
    return f"Our {topic.lower()} {'are' if plural else 'is'} {text}"


class KnowledgeIndex:
    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self._tf = [Counter(p.terms) for p in passages]
        self._len = [len(p.terms) for p in passages]
        self._avg = (sum(self._len) / len(self._len)) if passages else 0.0
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(passages)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    def search(self, text: str, k: int = 2) -> list[Hit]:
        query = set(terms(text))
        hits = []
        for p, tf, length in zip(self.passages, self._tf, self._len, strict=True):
            score = 0.0
            matched = [t for t in query if tf.get(t, 0)]
            if len(matched) < MIN_COVERAGE * len(query):
                continue
            for t in matched:
                f = tf[t]
                score += self._idf[t] * f * (K1 + 1) / (f + K1 * (1 - B + B * length / (self._avg or 1)))
            if score > 0 and p.topic:
                score += TOPIC_BONUS * sum(t in query for t in p.topic) / len(p.topic)
            if score > 0:
                hits.append(Hit(p, score))
        hits.sort(key=lambda h: (-h.score, self.passages.index(h.passage)))
        return hits[:k]

    def answer(self, text: str) -> Hit | None:
        """The best passage for what the caller asked, or None when nothing answers it well enough."""
        hits = self.search(text, 1)
        return hits[0] if hits and hits[0].score >= MIN_SCORE else None


@lru_cache(maxsize=64)
def _cached(knowledge_json: str, instructions: str) -> KnowledgeIndex:
    return KnowledgeIndex(_passages(Knowledge.model_validate_json(knowledge_json), instructions))


def index_for(knowledge: Knowledge, instructions: str) -> KnowledgeIndex:
    """The index of a profile's knowledge plus the facts of the instructions in force (cached: sessions of
    the same profile and instructions share one)."""
    return _cached(knowledge.model_dump_json(), instructions or "")
