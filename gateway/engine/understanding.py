"""Understanding a transcript: words, yes/no, slots (dates, times, names, numbers) and intent scores.

Pure functions, no I/O and no clock: the same words always mean the same thing. Dates are kept as the
caller said them ("on Tuesday", "tomorrow"), never resolved against a calendar, so the agent repeats
back exactly what it heard and nothing it guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .asr import normalise

# Words that carry no topic; dropped before matching so "do you" never makes two questions alike.
STOPWORDS = frozenset(
    """a an the and or but if of to in on at for from by with about as into is are was were be been am
    do does did doing done i me my mine you your yours we us our it its this that these those there here
    he she they them his her their can could would should will shall may might must have has had having
    please thanks thank hi hello hey so just also too very really some any what which who whom whose
    when where why how well oh um uh like okay ok yeah get got go going want wanted need needed
    let know tell say said much many more most than then now take see show give come make put ill id im
    one two three first next only not no yes yeah yep yup nope nah sure right""".split()
)

# A few words callers use for the same thing, folded into one so a question finds its answer whatever
# word the caller picked. Small and general (front-desk English), not a profile's phrases.
SYNONYMS = {
    "kids": "child",
    "kid": "child",
    "children": "child",
    "son": "child",
    "daughter": "child",
    "baby": "child",
    "price": "cost",
    "prices": "cost",
    "fee": "cost",
    "fees": "cost",
    "charge": "cost",
    "expensive": "cost",
    "pay": "cost",
    "where": "location",
    "located": "location",
    "address": "location",
    "find": "location",
    "directions": "location",
    "car": "park",
    "parking": "park",
    "garage": "park",
    "hours": "open",
    "close": "open",
    "closing": "open",
    "opening": "open",
    "weekend": "saturday sunday",
    "weekends": "saturday sunday",
    "holiday": "holiday",
    "holidays": "holiday",
    "christmas": "holiday christmas",
    "easter": "holiday easter",
    "thanksgiving": "holiday thanksgiving",
    "insured": "insurance",
    "coverage": "insurance",
    "cover": "insurance",
    "covered": "insurance",
    "medicaid": "insurance medicaid",
    "medicare": "insurance medicare",
    "hurt": "pain",
    "hurts": "pain",
    "hurting": "pain",
    "ache": "pain",
    "aching": "pain",
    "toothache": "pain tooth",
    "emergency": "urgent",
    "emergencies": "urgent",
    "asap": "urgent",
    "teeth": "tooth",
    "broke": "broken",
    "break": "broken",
    "cracked": "broken",
    "fell": "broken",
    "chipped": "broken",
}

_YES = (
    "yes",
    "yeah",
    "yep",
    "yup",
    "sure",
    "correct",
    "right",
    "please do",
    "go ahead",
    "absolutely",
    "definitely",
    "ok",
    "okay",
    "alright",
    "all right",
    "that's right",
    "that is right",
    "do it",
)
_NO = ("no", "nope", "nah", "don't", "do not", "not", "never", "wrong", "stop", "wait")


def stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed), enough to meet "appointments" with "appointment"."""
    w = word.replace("'", "")
    for suffix in ("ings", "ing", "ies", "ed", "es", "s"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if suffix == "ies":
                w += "y"
            break
    return w


def terms(text: str) -> list[str]:
    """Content terms of a text: synonyms folded, stop words dropped, stemmed."""
    out: list[str] = []
    for w in normalise(text):
        for part in SYNONYMS.get(w, w).split():
            if part not in STOPWORDS:
                out.append(stem(part))
    return out


def contains_phrase(words: list[str], phrase: str) -> bool:
    """Whether `phrase` (one or more words) occurs in `words`, word for word (stemmed)."""
    want = [stem(w) for w in normalise(phrase)]
    have = [stem(w) for w in words]
    n = len(want)
    return n > 0 and any(have[i : i + n] == want for i in range(len(have) - n + 1))


def yes_or_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when it is neither or both ("yes, no, wait")."""
    words = normalise(text)
    yes = any(contains_phrase(words, p) for p in _YES)
    no = any(contains_phrase(words, p) for p in _NO)
    if yes == no:
        return None
    return yes


# ---------------------------------------------------------------- slots
_NUMBER_WORDS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50,
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
    "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_PARTS = {"morning": "in the morning", "afternoon": "in the afternoon", "evening": "in the evening"}
_ORDINAL_NAMES = {v: k for k, v in _ORDINALS.items()}


@dataclass
class Slots:
    date: str | None = None  # as said: "tomorrow", "on Tuesday", "next Monday", "on the fifth of March"
    time: str | None = None  # "at 10", "at 2:30 in the afternoon", "in the morning"
    name: str | None = None
    numbers: list[int] = field(default_factory=list)

    def merged(self, other: Slots) -> Slots:
        return Slots(
            date=other.date or self.date,
            time=other.time or self.time,
            name=other.name or self.name,
            numbers=other.numbers or self.numbers,
        )

    @property
    def when(self) -> str:
        """ " on Tuesday at 10" or "": ready to follow a noun in a sentence."""
        parts = [p for p in (self.date, self.time) if p]
        return (" " + " ".join(parts)) if parts else ""

    def fields(self) -> dict[str, str]:
        return {
            "when": self.when,
            "date": self.date or "",
            "time": self.time or "",
            "name": self.name or "",
            "number": str(self.numbers[0]) if self.numbers else "",
        }

    def has(self, slot: str) -> bool:
        return bool(self.numbers) if slot == "number" else bool(getattr(self, slot))


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", word)
    if m:
        return int(m.group(1))
    return _NUMBER_WORDS.get(word, _ORDINALS.get(word))


def _date(words: list[str]) -> str | None:
    text = " ".join(words)
    if "day after tomorrow" in text:
        return "the day after tomorrow"
    for w in ("today", "tomorrow", "tonight"):
        if w in words:
            return w
    for i, w in enumerate(words):
        if w in _DAYS or (w.endswith("s") and w[:-1] in _DAYS):
            day = (w if w in _DAYS else w[:-1]).capitalize()
            prev = words[i - 1] if i else ""
            return f"next {day}" if prev == "next" else f"this {day}" if prev == "this" else f"on {day}"
        if w in _MONTHS:
            # "march 5th", "the 5th of march", "5 march"
            around = words[max(0, i - 3) : i] + words[i + 1 : i + 2]
            nums = [n for n in (_number(x) for x in around) if n is not None and 1 <= n <= 31]
            if nums:
                return f"on the {_ORDINAL_NAMES.get(nums[-1], str(nums[-1]))} of {w.capitalize()}"
            return f"in {w.capitalize()}"
    for i, w in enumerate(words):
        if w in _ORDINALS or re.fullmatch(r"\d+(st|nd|rd|th)", w):
            if i and words[i - 1] == "the":
                n = _number(w)
                if n is not None and 1 <= n <= 31:
                    return f"on the {_ORDINAL_NAMES.get(n, str(n))}"
    if "next week" in text:
        return "next week"
    return None


def _time(words: list[str]) -> str | None:
    text = " ".join(words)
    m = re.search(r"\b(\d{1,2}):(\d{2})\b", text)
    part = next((_PARTS[w] for w in words if w in _PARTS), None)
    meridian = None
    if re.search(r"\b(a ?m|a\.m)\b", text):
        meridian = "in the morning"
    elif re.search(r"\b(p ?m|p\.m)\b", text):
        meridian = "in the afternoon"
    suffix = f" {meridian or part}" if (meridian or part) else ""
    if m:
        return f"at {int(m.group(1))}:{m.group(2)}{suffix}"
    if "noon" in words or "midday" in words:
        return "at noon"
    for i, w in enumerate(words):
        if w in ("at", "around", "about") and i + 1 < len(words):
            n = _number(words[i + 1])
            if n is not None and 1 <= n <= 12:
                rest = words[i + 2] if i + 2 < len(words) else ""
                minutes = _number(rest)
                clock = f"{n}:{minutes:02d}" if minutes is not None and 10 <= minutes < 60 else str(n)
                if rest == "thirty":
                    clock = f"{n}:30"
                return f"at {clock}{suffix}"
        if w == "half" and i + 2 < len(words) and words[i + 1] == "past":
            n = _number(words[i + 2])
            if n is not None and 1 <= n <= 12:
                return f"at {n}:30{suffix}"
    m = re.search(r"\b(\d{1,2}) ?(am|pm)\b", text)
    if m:
        return f"at {int(m.group(1))}{suffix}"
    return part


_NAME = re.compile(r"\b(?i:my name is|this is|i am|i'm|name's)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")


def slots(text: str) -> Slots:
    """Dates, times, a name and numbers from what the caller said."""
    words = normalise(text.replace("a.m.", "am").replace("p.m.", "pm"))
    m = _NAME.search(text)
    name = m.group(1) if m and m.group(1).lower() not in STOPWORDS else None
    numbers = [n for w in words if w_isnum(w) and (n := _number(w)) is not None]
    return Slots(date=_date(words), time=_time(words), name=name, numbers=numbers)


def w_isnum(word: str) -> bool:
    return word.isdigit() or word in _NUMBER_WORDS and word != "oh"


# ---------------------------------------------------------------- intents
@dataclass(frozen=True)
class Scored:
    name: str
    score: float  # 0..1
    keyword: bool  # a keyword of the intent was heard


def overlap(a: list[str], b: list[str]) -> float:
    """Dice coefficient of two term lists (as sets)."""
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return 2 * len(sa & sb) / (len(sa) + len(sb))
