"""The summary a human gets when the AI hands a caller over.

Two sources, one shape (`Summary`):

- With an OpenAI Realtime session: an out-of-band response on the live session (`response.create` with
  `conversation: "none"`, text output only, our metadata), which reads the conversation so far, adds
  nothing to it and speaks nothing, so the caller hears nothing
  (https://platform.openai.com/docs/guides/realtime-conversations#create-responses-outside-the-default-conversation).
  The model is asked for a small JSON object; whatever it leaves out (or a reply that is not JSON) is
  filled from the extractive summary.
- With the embedded engine (which answers no out-of-band requests) or when the model does not answer in
  time: an extractive summary from the transcript the gateway already holds and the escalation's own
  reason and urgency (the intent words and slot patterns of gateway/records/analysis.py).

`Summary.redacted()` applies the profile's redaction policy; nothing unredacted leaves the gateway.
Everything here is pure: no sockets, no clocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from gateway.records import analysis
from gateway.records.redact import NO_REDACTION, Redactor

HANDOFF_PURPOSE = "handoff_summary"
Urgency = Literal["low", "normal", "high"]
Sentiment = Literal["positive", "neutral", "negative"]
URGENCIES: tuple[str, ...] = ("low", "normal", "high")
SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative")

INSTRUCTIONS = (
    "A human colleague is about to take over this call; the caller cannot hear you. Reply with one JSON "
    "object and nothing else, with these keys: "
    '"summary" (at most two sentences for the colleague: who is calling, what they want, what was done), '
    '"reason" (why the caller needs a human, a few words), '
    '"urgency" ("low", "normal" or "high"), '
    '"sentiment" ("positive", "neutral" or "negative"), '
    '"name" (the caller\'s name if they said it, else null), '
    '"callback_number" (a number the caller gave, else null).'
)

# Spoken digits a caller gives as a callback number ("five five five, zero one nine nine").
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_NUMBER = re.compile(r"(?<![\d])\+?\d[\d ().-]{5,20}\d(?![\d])")
_JSON_OBJECT = re.compile(r"\{.*\}", re.S)
# The records' name pattern, with the lead-in in any case ("My name is Ann Lee" opens a sentence).
_NAME = re.compile(r"\b(?i:my name is|this is|i am|i'm|name's|call me)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")


@dataclass(frozen=True)
class Slots:
    name: str | None = None
    callback_number: str | None = None
    reason: str | None = None
    urgency: str = "normal"


@dataclass(frozen=True)
class Summary:
    text: str
    reason: str
    urgency: str = "normal"
    sentiment: str = "neutral"
    slots: Slots = field(default_factory=Slots)
    source: Literal["model", "extractive"] = "extractive"
    redacted_by: str = "none"  # "profile" once `redacted()` ran with an enabled policy

    def redacted(self, redactor: Redactor) -> Summary:
        """Every free-text field through the profile's redactor (idempotent on masked text)."""
        s = self.slots
        callback = s.callback_number

        def clean(text: str) -> str:
            return scrub(redactor, text, callback)

        return replace(
            self,
            text=clean(self.text),
            reason=clean(self.reason),
            slots=Slots(name=s.name, callback_number=redactor.number(callback) if callback else None,
                        reason=clean(s.reason) if s.reason else None, urgency=s.urgency),
            redacted_by="profile" if redactor.enabled else "none",
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scrub(redactor: Redactor, text: str, callback: str | None) -> str:
    """`redactor.text`, and the callback number masked wherever it appears: a number the detector may
    not take for a phone (7 digits, a national number without context) is still the caller's number."""
    if callback and redactor.enabled and "phone" in redactor.policy.kinds:
        text = text.replace(callback, redactor.number(callback))
    return redactor.text(text)


def _callback(text: str) -> str | None:
    words = re.findall(r"[a-z]+|\d+|\+", text.lower())
    digits = "".join(_DIGIT_WORDS.get(w, w if w.isdigit() else " ") for w in words)
    spoken = max(digits.split(" "), key=len, default="")
    written = _NUMBER.search(text)
    if written:
        return written.group().strip()
    return spoken if len(spoken) >= 7 else None


def extractive(turns: list[dict[str, str]], *, reason: str, urgency: str) -> Summary:
    """A summary from what was said (`turns`: {"role": "caller"|"agent", "text"}) and the escalation's
    reason and urgency; nothing generated."""
    said = [{"role": t.get("role", ""), "text": t.get("text", "")} for t in turns]
    found = analysis.analyse(said, [], outcome="escalated", duration_s=0.0, stats={}, usage={},
                             redactor=NO_REDACTION)
    caller = [t["text"].strip() for t in said if t["role"] == "caller" and t["text"].strip()]
    slots = found["slots"]
    names = (m.group(1) for m in map(_NAME.search, caller) if m)
    name = slots.get("name") or next((n for n in names if n.split()[0] not in analysis._NOT_NAMES), None)
    callback = slots.get("callback_number") or next((c for c in map(_callback, caller) if c), None)
    urgency = urgency if urgency in URGENCIES else "normal"
    if slots.get("urgency") == "high":
        urgency = "high"
    intent = str(found["intent"]).replace("_", " ")
    who = f"Caller {name}" if name else "The caller"
    if caller:
        first, last = caller[0], caller[-1]
        text = f'{who} ({intent}) said: "{first[:160]}".'
        if last != first:
            text += f' Last: "{last[:160]}".'
    else:
        text = f"{who} said nothing the AI recognised."
    if callback:
        text += f" Callback number: {callback}."
    reason = reason.strip() or (caller[0][:120] if caller else "caller asked for a person")
    return Summary(text=text, reason=reason, urgency=urgency, sentiment=str(found["sentiment"]),
                   slots=Slots(name=name, callback_number=callback, reason=reason, urgency=urgency),
                   source="extractive")


def request(handoff_id: str) -> dict[str, Any]:
    """The out-of-band `response.create` asking the live session for a handoff summary."""
    return {"type": "response.create",
            "response": {"conversation": "none", "output_modalities": ["text"], "instructions": INSTRUCTIONS,
                         "metadata": {"purpose": HANDOFF_PURPOSE, "handoff_id": handoff_id}}}


def is_handoff_response(event: dict[str, Any]) -> str | None:
    """The handoff id when `event` (response.created / response.done) is one of our summary responses."""
    meta = (event.get("response") or {}).get("metadata")
    if isinstance(meta, dict) and meta.get("purpose") == HANDOFF_PURPOSE:
        return str(meta.get("handoff_id") or "")
    return None


def from_model(text: str, fallback: Summary) -> Summary:
    """The model's reply (ideally the JSON object INSTRUCTIONS asks for) over the extractive `fallback`:
    each field the model gave and that makes sense wins; a reply that is not JSON becomes the text."""
    text = text.strip()
    if not text:
        return fallback
    data: Any = None
    match = _JSON_OBJECT.search(text)
    if match:
        try:
            data = json.loads(match.group())
        except ValueError:
            data = None
    if not isinstance(data, dict):
        return replace(fallback, text=text[:600], source="model")

    def s(key: str) -> str | None:
        v = data.get(key)
        return v.strip()[:600] if isinstance(v, str) and v.strip() else None

    urgency = s("urgency") if s("urgency") in URGENCIES else fallback.urgency
    if fallback.urgency == "high":  # what the caller or the model's tool call said outranks a calmer guess
        urgency = "high"
    sentiment = s("sentiment") if s("sentiment") in SENTIMENTS else fallback.sentiment
    reason = s("reason") or fallback.reason
    fs = fallback.slots
    slots = Slots(name=s("name") or fs.name, callback_number=s("callback_number") or fs.callback_number,
                  reason=reason, urgency=urgency or "normal")
    return Summary(text=s("summary") or fallback.text, reason=reason, urgency=urgency or "normal",
                   sentiment=sentiment or "neutral", slots=slots, source="model")
