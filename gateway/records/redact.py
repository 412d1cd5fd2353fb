"""Redaction of personal and health data in text, by a profile's policy, before text leaves the call.

Detectors (each returns spans; overlaps resolve to the earlier, longer span):
  card     13-19 digits, spaces or dashes allowed, Luhn-checked (a failed checksum is not a card)
  ssn      AAA-GG-SSSS with the SSA's never-issued blocks excluded (000, 666, 9xx; 00 group; 0000 serial),
           or nine digits after "social security"/"SSN"
  phone    libphonenumber's matcher (the `phonenumbers` package: Google's metadata, offline), region from
           the policy, leniency VALID (or written
           with a + country code) so order numbers and prices are not phones
  email    written (a@b.example) and spoken ("a at example dot com")
  dob      a date (numeric, ISO, or with a month name) within a short window after "born", "birth",
           "DOB" or "birthday": other dates (appointments) are kept
  address  a house number, one to four words, and a street suffix (Street, Ave, Rd, ...), optional unit
  mrn      an identifier after "MRN", "medical record (number)", "patient ID/number", "chart number"

Masking: `[PHONE]`, or with `keep_last4` for the kind, `[PHONE ***1234]` (the last four digits, so an
operator can still match a callback number or a card).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["phone", "dob", "card", "ssn", "email", "address", "mrn"]
ALL_KINDS: tuple[Kind, ...] = ("card", "ssn", "phone", "email", "dob", "address", "mrn")


class RedactionPolicy(BaseModel):
    """A profile's `records.redaction` block."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    kinds: list[Kind] = Field(default_factory=lambda: list(ALL_KINDS))
    keep_last4: list[Kind] = Field(default_factory=lambda: ["phone", "card"])
    region: str = Field("US", min_length=2, max_length=2, description="default region for national numbers")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: Kind


# ---------------------------------------------------------------- detectors
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:social security(?: number)?|ssn)\b[^\d]{0,20}((?:\d[ -]?){8}\d)(?!\d)")
_EMAIL = re.compile(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b")
_EMAIL_SPOKEN = re.compile(
    r"(?i)\b[a-z0-9][a-z0-9._-]*(?: dot [a-z0-9_-]+)* at [a-z0-9-]+(?: dot [a-z0-9-]+)* dot "
    r"(?:com|org|net|edu|gov|io|co|uk|de|fr|us|info)\b"
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|"
    rf"{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH},?\s+\d{{4}})"
)
_DOB = re.compile(rf"(?i)\b(?:born|birth|dob|d\.o\.b\.?|birthday)\b[^.?!\d]{{0,25}}?({_DATE})")
_SUFFIX = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|"
    r"terrace|circle|parkway|pkwy|highway|hwy|square|sq)"
)
_ADDRESS = re.compile(
    rf"(?i)\b\d{{1,6}}(?:\s+(?:north|south|east|west|n|s|e|w)\.?)?(?:\s+(?!{_SUFFIX}\b)[a-z][a-z'-]*){{1,4}}"
    rf"\s+{_SUFFIX}\b\.?(?:,?\s+(?:apt|apartment|unit|suite|ste|#)\.?\s*#?\s*[a-z0-9-]+)?"
)
_MRN = re.compile(
    r"(?i)\b(?:mrn|medical record(?: number| no\.?| #)?|patient (?:id|number|no\.?)|chart number)"
    r"(?:\s+(?:is|was))?\s*[:#]?\s*([a-z]{0,3}-?\d[\d-]{4,11}\d)\b"
)
_STOP = {
    "the",
    "a",
    "an",
    "and",
    "or",
    "of",
    "to",
    "for",
    "in",
    "on",
    "at",
    "my",
    "your",
    "is",
    "was",
    "will",
    "be",
    "we",
    "i",
    "you",
    "our",
    "their",
    "he",
    "she",
    "they",
    "it",
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _cards(text: str) -> Iterable[Span]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            yield Span(m.start(), m.end(), "card")


def _ssns(text: str) -> Iterable[Span]:
    for m in _SSN.finditer(text):
        yield Span(m.start(), m.end(), "ssn")
    for m in _SSN_CONTEXT.finditer(text):
        yield Span(m.start(1), m.end(1), "ssn")


def _phones(text: str, region: str) -> Iterable[Span]:
    # VALID (a number libphonenumber knows is assigned) keeps order numbers and prices out; a number
    # written with its + country code is a phone number even in a range kept for fiction or tests.
    for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        if m.raw_string.startswith("+") or phonenumbers.is_valid_number(m.number):
            yield Span(m.start, m.end, "phone")


def _emails(text: str) -> Iterable[Span]:
    for rx in (_EMAIL, _EMAIL_SPOKEN):
        for m in rx.finditer(text):
            yield Span(m.start(), m.end(), "email")


def _dobs(text: str) -> Iterable[Span]:
    for m in _DOB.finditer(text):
        yield Span(m.start(1), m.end(1), "dob")


def _addresses(text: str) -> Iterable[Span]:
    for m in _ADDRESS.finditer(text):
        words = m.group().split()[1:-1]
        if words and all(w.lower().strip(".,") in _STOP for w in words):
            continue
        if any(w.lower() in _STOP for w in words):
            continue  # "2 dogs on the street": a sentence, not an address
        yield Span(m.start(), m.end(), "address")


def _mrns(text: str) -> Iterable[Span]:
    for m in _MRN.finditer(text):
        yield Span(m.start(1), m.end(1), "mrn")


def detect(text: str, kinds: Iterable[str] = ALL_KINDS, region: str = "US") -> list[Span]:
    """Spans of `kinds` in `text`, non-overlapping, in order."""
    wanted = set(kinds)
    found: list[Span] = []
    # Order matters for overlaps: a Luhn-valid card or an SSN is never also reported as a phone.
    if "card" in wanted:
        found += _cards(text)
    if "ssn" in wanted:
        found += _ssns(text)
    if "email" in wanted:
        found += _emails(text)
    if "dob" in wanted:
        found += _dobs(text)
    if "mrn" in wanted:
        found += _mrns(text)
    if "address" in wanted:
        found += _addresses(text)
    if "phone" in wanted and sum(c.isdigit() for c in text) >= 5:  # the matcher costs ~1 ms a sentence
        found += _phones(text, region)
    chosen: list[Span] = []
    for span in found:  # first detector wins; then the longer span
        if any(span.start < c.end and c.start < span.end for c in chosen):
            continue
        chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


class Redactor:
    def __init__(self, policy: RedactionPolicy | None = None) -> None:
        self.policy = policy or RedactionPolicy()
        self.enabled = self.policy.enabled and bool(self.policy.kinds)

    def spans(self, text: str) -> list[Span]:
        return detect(text, self.policy.kinds, self.policy.region) if self.enabled and text else []

    def text(self, text: str) -> str:
        if not self.enabled or not text:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        out, pos = [], 0
        for s in spans:
            out.append(text[pos : s.start])
            out.append(self._mask(s.kind, text[s.start : s.end]))
            pos = s.end
        out.append(text[pos:])
        return "".join(out)

    def _mask(self, kind: Kind, value: str) -> str:
        from gateway.records.metrics import REDACTIONS

        REDACTIONS.labels(kind=kind).inc()
        if kind in self.policy.keep_last4:
            digits = re.sub(r"\D", "", value)
            if len(digits) >= 8:
                return f"[{kind.upper()} ***{digits[-4:]}]"
        return f"[{kind.upper()}]"

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (tool arguments, results)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def number(self, number: str) -> str:
        """A caller/callee number field: masked whole (keeping the last four when the policy says)."""
        if not self.enabled or "phone" not in self.policy.kinds or not number:
            return number
        digits = re.sub(r"\D", "", number)
        if len(digits) < 5:
            return number  # an extension or "anonymous": not a phone number
        return self._mask("phone", number) if "phone" in self.policy.keep_last4 else "[PHONE]"


NO_REDACTION = Redactor(RedactionPolicy(enabled=False))
