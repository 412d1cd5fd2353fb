"""A held-out set of caller utterances for the front-desk profile, and the measurement run on it.

Written for this measurement, not taken from the profile: none of these sentences is an example phrase of
the profile's intents, and the engine was not tuned on their audio. They include the ten questions of
issue 18 that the old phrase spotter lost or got wrong (insurance, prices, urgent pain, weekend opening,
where the office is, cancelling, children, parking, a broken crown, holiday hours; a manager and a person).

Each utterance is spoken by espeak-ng with one of several voices and rates, sent through 8 kHz G.711
μ-law (sox), some with line noise, then transcribed and answered by the engine's own parts. Where the
agent proposes an action, the simulated caller answers by voice too: "yes" when it is what they asked
for, "no" otherwise. A wrong action is any action done that the caller did not ask for.

Used by tests/engine/test_heldout.py (asserts) and benchmarks/model_engine.py (prints the figures that
docs/model.md records).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# (espeak-ng voice, words per minute): male and female US, British, Caribbean and New York voices, slow
# to fast. Assigned round-robin so every voice says a mix of requests and questions.
VOICES: list[tuple[str, int]] = [
    ("en-us", 160),
    ("en-us+f3", 150),
    ("en-gb", 175),
    ("en-us+m3", 185),
    ("en-029", 150),
    ("en-us+f2", 170),
    ("en-us-nyc", 165),
    ("en-gb-x-rp+f4", 140),
]
NOISY_EVERY = 3  # every third utterance gets white line noise at ~30 dB SNR


@dataclass(frozen=True)
class Case:
    text: str
    # What the first answer must be: "fact: <topic>" / "faq: <question>" (the passage answered from),
    # an intent name (proposed as a yes/no question or asked for a slot), or "out_of_scope".
    expect: str
    # For intents: the caller's spoken answer to the yes/no question ("yes"/"no"); the action must be
    # done exactly when it is "yes" and the proposal was right.
    answer: str = "yes"


INSURANCE = "faq: Do you accept my insurance? Which insurance plans do you take?"
PRICES = "faq: How much does a cleaning or a checkup cost? What are your prices?"
PAIN = "faq: I am in pain, I have a toothache, it is urgent, an emergency."
CHILDREN = "faq: Do you see children and kids? How old?"
CROWN = "faq: My crown broke or fell off, a broken tooth or a chipped filling."
POLICY = "faq: What is your cancellation policy?"

CASES: list[Case] = [
    # The questions, reworded.
    Case("Do you take my insurance?", INSURANCE),
    Case("How much does a cleaning cost?", PRICES),
    Case("I have a terrible toothache, it is really urgent.", PAIN),
    Case("Are you open on Saturday?", "fact: Weekend opening"),
    Case("Where is your office?", "fact: Office address"),
    Case("I'd like to cancel my appointment, please.", "cancel_appointment"),
    Case("Do you see children?", CHILDREN),
    Case("Is there parking nearby?", "fact: Parking"),
    Case("My crown broke off.", CROWN),
    Case("Are you open on Christmas Eve?", "fact: Holiday hours"),
    Case("Can I talk to the manager, please?", "speak_to_human"),
    Case("I would like to speak with a real person.", "speak_to_human"),
    # More questions the knowledge answers.
    Case("Which insurance plans do you accept?", INSURANCE),
    Case("Is Delta Dental accepted at your practice?", INSURANCE),
    Case("What are your prices for a checkup?", PRICES),
    Case("My tooth hurts really badly, it's an emergency.", PAIN),
    Case("Are you open at the weekend?", "fact: Weekend opening"),
    Case("What is your address?", "fact: Office address"),
    Case("Can I bring my kids to see the dentist?", CHILDREN),
    Case("Where can I leave my car?", "fact: Parking"),
    Case("A piece of my crown fell out.", CROWN),
    Case("Are you open on Thanksgiving?", "fact: Holiday hours"),
    Case("What are your hours over the holidays?", "fact: Holiday hours"),
    Case("What time do you open in the morning?", "fact: Opening hours"),
    Case("When do you close in the evening?", "fact: Opening hours"),
    Case("What is your cancellation policy?", POLICY),
    # Requests: proposed, then done only after a yes.
    Case("Please cancel my appointment on Thursday.", "cancel_appointment"),
    Case("I can't make it tomorrow, please cancel my visit.", "cancel_appointment", answer="no"),
    Case("I'd like to schedule a cleaning next Tuesday at nine.", "book_appointment"),
    Case("Can I get an appointment for Friday morning?", "book_appointment"),
    Case("I want to see the dentist on Monday.", "book_appointment", answer="no"),
    Case("I need to move my appointment to Wednesday.", "reschedule_appointment"),
    Case("I have a question about my invoice.", "transfer_billing"),
    Case("Is there a receptionist I can talk to?", "speak_to_human", answer="no"),
    Case("That's everything, thanks, bye.", "goodbye"),
    Case("I want to book, no, wait, cancel my appointment.", "cancel_appointment", answer="no"),
    # Nothing in the knowledge answers these: an honest answer and a transfer offer, never a made-up one.
    Case("Do you sell electric toothbrushes?", "out_of_scope", answer="no"),
    Case("Can you recommend a good orthodontist?", "out_of_scope", answer="no"),
    Case("What's the weather like today?", "out_of_scope", answer="no"),
    Case("Do you do teeth whitening?", "out_of_scope", answer="yes"),
    Case("Is Doctor Smith working today?", "out_of_scope", answer="no"),
    Case("Can you tell me a joke?", "out_of_scope", answer="no"),
]

ACTIONS = {
    "cancel_appointment",
    "reschedule_appointment",
    "book_appointment",
    "transfer_billing",
    "speak_to_human",
    "goodbye",
    "out_of_scope",
}


# ---------------------------------------------------------------- audio
@lru_cache(maxsize=256)
def caller_audio(text: str, voice: str, wpm: int, noisy: bool) -> bytes:
    """8 kHz μ-law: 300 ms of line silence, the words, 700 ms of silence (as a VAD-ended turn has)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], capture_output=True, check=True
    ).stdout
    raw = subprocess.run(
        ["sox", "-D", "-t", "wav", "-", "-r", "8000", "-e", "signed-integer", "-b", "16", "-t", "raw", "-"],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout
    pcm = np.frombuffer(raw, "<i2").astype(np.float64)
    pcm = np.concatenate([np.zeros(2400), pcm, np.zeros(5600)])
    if noisy:
        rms = float(np.sqrt(np.mean(pcm[pcm != 0] ** 2))) if np.any(pcm) else 1000.0
        pcm += np.random.default_rng(len(text)).normal(0, rms / 31.6, len(pcm))  # ~30 dB SNR
    from gateway.audio.g711 import ULAW_ENCODE

    return ULAW_ENCODE[np.clip(np.rint(pcm), -32768, 32767).astype(np.int16).view(np.uint16)].tobytes()


def voice_for(index: int) -> tuple[str, int, bool]:
    voice, wpm = VOICES[index % len(VOICES)]
    return voice, wpm, index % NOISY_EVERY == NOISY_EVERY - 1


# ---------------------------------------------------------------- word error rate
_DIGITS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten",
}  # fmt: skip


def words(text: str) -> list[str]:
    out = []
    for w in re.findall(r"[a-z0-9']+", text.lower().replace("-", " ")):
        out.append(_DIGITS.get(w, w))
    return out


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


# ---------------------------------------------------------------- the run
@dataclass
class Outcome:
    case: Case
    voice: str
    wpm: int
    noisy: bool
    transcript: str
    understood: str  # what the first answer was (same vocabulary as Case.expect)
    first_reply: str
    reply_heard: str = ""  # the caller's yes/no as transcribed
    acted: list[str] = field(default_factory=list)  # intents done (tools called or acts replied)
    asked_first: bool = True  # every action was put as a question before it was done
    asr_ms: list[float] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return self.understood == self.case.expect

    @property
    def wanted(self) -> set[str]:
        """The action the caller wanted done: only their own request, and only when they said yes."""
        if self.case.expect in ACTIONS and self.case.answer == "yes":
            return {self.case.expect}
        return set()

    @property
    def wrong_actions(self) -> list[str]:
        return [a for a in self.acted if a not in self.wanted]


def understood(plan) -> str:
    if plan.kind == "knowledge":
        return plan.fields.get("passage", "knowledge")
    if plan.kind in ("confirm", "ask", "out_of_scope", "act") and plan.intent:
        return plan.intent
    return plan.kind


TOOLS = {"transfer_call", "end_call", "escalate"}


def run_case(index: int, case: Case, profile, engines, recognise=None) -> Outcome:
    """One caller turn (and their yes/no to a proposal) through the transcriber and the dialogue."""
    from gateway.engine import audio
    from gateway.engine.dialogue import DialogueEngine

    recognise = recognise or (lambda pcm: engines.recognise(profile.name, pcm, 8000))
    voice, wpm, noisy = voice_for(index)
    dialogue = DialogueEngine(profile)
    heard = recognise(audio.decode("audio/pcmu", caller_audio(case.text, voice, wpm, noisy)))
    transcript = heard.transcript if heard else ""
    plan = dialogue.answer(transcript, TOOLS, profile.instructions)
    out = Outcome(case, voice, wpm, noisy, transcript, understood(plan), plan.reply or "")
    out.asr_ms.append(heard.cpu_ms if heard else 0.0)
    plans = [plan]
    # Up to two more turns: a slot asked for gets the day, a yes/no question gets the caller's answer.
    for _ in range(2):
        if plan.kind == "ask":
            said = "Next Monday at ten."
        elif plan.kind in ("confirm", "out_of_scope") and dialogue.pending is not None:
            proposed = plan.intent
            said = "Yes, please." if proposed == case.expect and case.answer == "yes" else "No, thank you."
        else:
            break
        reply = recognise(audio.decode("audio/pcmu", caller_audio(said, voice, wpm, False)))
        out.asr_ms.append(reply.cpu_ms if reply else 0.0)
        out.reply_heard += (" / " if out.reply_heard else "") + (reply.transcript if reply else "")
        plan = dialogue.answer(reply.transcript if reply else "", TOOLS, profile.instructions)
        plans.append(plan)
    for i, p in enumerate(plans):
        if p.kind == "act" and p.intent:
            out.acted.append(p.intent)
            out.asked_first &= i > 0 and plans[i - 1].kind in ("confirm", "out_of_scope")
    return out


@dataclass
class Figures:
    outcomes: list[Outcome]

    @property
    def wer(self) -> float:
        errors = sum(edit_distance(words(o.case.text), words(o.transcript)) for o in self.outcomes)
        return errors / sum(len(words(o.case.text)) for o in self.outcomes)

    @property
    def intent_accuracy(self) -> float:
        return sum(o.correct for o in self.outcomes) / len(self.outcomes)

    @property
    def wrong_actions(self) -> int:
        return sum(len(o.wrong_actions) for o in self.outcomes)

    @property
    def actions_done(self) -> int:
        return sum(len(o.acted) for o in self.outcomes)

    def table(self) -> str:
        rows = [
            "| # | voice, wpm | noise | said | heard | understood | ok | acted |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, o in enumerate(self.outcomes):
            rows.append(
                f"| {i + 1} | {o.voice}, {o.wpm} | {'yes' if o.noisy else ''} | {o.case.text} | "
                f"{o.transcript} | {o.understood} | {'✓' if o.correct else '✗'} | {', '.join(o.acted)} |"
            )
        return "\n".join(rows)


def run(profile, engines, recognise=None) -> Figures:
    return Figures([run_case(i, c, profile, engines, recognise) for i, c in enumerate(CASES)])
