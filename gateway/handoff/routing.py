"""A profile's `handoff:` block and what a handoff carries: targets with routing attributes, the hop
count, and the SIP headers sized for carriers.

    handoff:
      targets:                       # tried in order (warm transfer); the first one for a blind escalation
        - target: billing            # a name from transfer_targets (so the transfer policy already allows it)
          queue: billing-queue       # optional: the ACD / Flex queue name carried in the attributes
          timeout_s: 20              # ring time before the next target (warm transfer)
        - target: human
      attributes: {skill: billing, priority: 5, vip: false, language: en-US}
      last_turns: 6                  # turns carried in the webhook / fetch payload (all of them: fetch by id)
      max_hops: 2                    # refuse a handoff once a call has been handed on this often
      mode: warm                     # warm (briefing + accept) | blind (transfer with headers)
      on_no_answer: carry_on         # carry_on | take_message | hangup
      hold_audio: tone_stream://%(2000,4000,440);loops=-1   # SIP warm transfer: what the caller hears
                                     # while the human is dialled and briefed (unset: the caller stays
                                     # with the AI); an absolute file path, tone_stream:// or local_stream://
      accept_timeout_s: 30           # after answering: time to press accept_digit (1) / decline_digit (2)
      coach: false                   # true: the briefing AI stays on the human's leg as a whisper coach;
                                     # the human presses 0 to hear the summary again, * to send it away
      notes: false                   # true: a listen-only AI note-taker transcribes caller and human
      webhook_url: https://crm.example/handoff   # optional; signed with GATEWAY_HANDOFF_WEBHOOK_SECRET
      webhook_format: generic        # generic | flex (TaskRouter task attributes, gateway/handoff/payload.py)
      twilio:                        # Twilio Media Streams calls only (gateway/handoff/twilio_warm.py)
        coach_to: sip:ai-coach@example.sip.twilio.com   # routes back to this gateway's /twilio/voice
        hold_url: https://example.com/hold.mp3          # waitUrl/holdUrl; unset: Twilio's default music
        caller_id: "+15550100"       # From of the human's leg; unset: the number the caller dialled

SIP headers (`sip_headers`): a carrier or SBC may drop an INVITE that no longer fits one UDP datagram
(RFC 3261 section 18.1.1 asks for TCP above 1300 bytes), so the AI's headers are kept to a small budget:
short fields in full, the summary cut to what is left, and everything long by reference: the human
side fetches `GET /handoffs/{X-AI-Handoff-Id}` from the admin API (read scope).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.call.control import header_text

HOPS_HEADER = "X-AI-Hops"
ID_HEADER = "X-AI-Handoff-Id"
HEADER_BUDGET = 700  # bytes of X-AI-* headers in one INVITE (values + names)
SUMMARY_MAX = 300


class Attributes(BaseModel):
    """Routing attributes a contact centre routes on (TaskRouter / Flex task attributes, ACD skills)."""

    model_config = ConfigDict(extra="forbid")
    skill: str | None = Field(None, max_length=64)
    priority: int = Field(0, ge=0, le=100)
    vip: bool = False
    language: str | None = Field(None, max_length=16, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(..., min_length=1, max_length=64, description="a name from transfer_targets")
    queue: str | None = Field(None, max_length=64)
    timeout_s: float = Field(20.0, gt=0, le=120)
    attributes: Attributes | None = None  # overrides the block's attributes for this target


# What FreeSWITCH can play as hold audio (uuid_broadcast): an absolute path to a sound file
# (mod_sndfile / mod_native_file formats), a tone_stream:// (mod_tone_stream, TGML
# https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_tone_stream_6586599/) or a
# local_stream:// music-on-hold source (mod_local_stream). One token: no spaces, quotes or braces.
HOLD_AUDIO = re.compile(r"(/(?!.*\.\.)[A-Za-z0-9_./-]{1,250}\.(wav|r8|r16|pcmu|pcma)"
                        r"|tone_stream://[%(),;=0-9A-Za-z.+-]{1,200}|local_stream://[A-Za-z0-9_-]{1,64})")


class TwilioHandoff(BaseModel):
    """A warm transfer on a Twilio call (docs/handoff.md): the caller is moved into a conference and held,
    the human is added as a participant, and the AI coach joins as a participant with `coaching` on,
    through `coach_to`: a Twilio SIP domain address whose voice URL is this gateway's
    /twilio/voice (Participants have no TwiML of their own)."""

    model_config = ConfigDict(extra="forbid")
    coach_to: str = Field(..., pattern=r"^sips?:[^\s;,?'\"<>&]{3,200}$")
    hold_url: str | None = Field(None, max_length=500, pattern=r"^https?://[^\s\"<>]{3,490}$")
    caller_id: str | None = Field(None, pattern=r"^\+[0-9]{6,16}$")


class HandoffPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[Target] = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=Attributes)
    last_turns: int = Field(6, ge=0, le=50)
    max_hops: int = Field(2, ge=1, le=10)
    mode: Literal["warm", "blind"] = "blind"
    on_no_answer: Literal["carry_on", "take_message", "hangup"] = "carry_on"
    webhook_url: str | None = Field(None, max_length=500, pattern=r"^https?://")
    webhook_format: Literal["generic", "flex"] = "generic"
    summary_timeout_s: float = Field(3.0, gt=0, le=20)
    accept_timeout_s: float = Field(30.0, gt=0, le=300)  # answered, briefed, no key pressed: next target
    coach: bool = False  # keep the briefing AI on the human's leg after the bridge, as a whisper coach
    coach_repeat_digit: str = Field("0", pattern=r"^[0-9*#]$")  # the coach repeats the summary
    coach_leave_digit: str = Field("*", pattern=r"^[0-9*#]$")  # the coach leaves the call
    notes: bool = False  # after the bridge a listen-only AI transcribes both sides into the handoff
    accept_digit: str = Field("1", pattern=r"^[0-9*#]$")
    decline_digit: str = Field("2", pattern=r"^[0-9*#]$")
    twilio: TwilioHandoff | None = None  # warm transfer on Twilio calls (without it they get the blind one)
    hold_audio: str | None = Field(None, max_length=260)  # SIP warm transfer: played to the held caller

    @field_validator("hold_audio")
    @classmethod
    def _hold_audio(cls, value: str | None) -> str | None:
        if value is not None and not HOLD_AUDIO.fullmatch(value):
            raise ValueError("hold_audio must be an absolute sound file path (.wav .r8 .r16 .pcmu .pcma), "
                             "a tone_stream:// or a local_stream:// URI")
        return value

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[Target]) -> list[Target]:
        names = [t.target for t in targets]
        if len(set(names)) != len(names):
            raise ValueError("a target is listed twice")
        return targets


def incoming_hops(value: Any) -> int:
    """The hop count a call arrived with (stream metadata `hops`, from the X-AI-Hops header); anything
    that is not a small number counts as 0 (a stranger's header cannot make the count negative)."""
    text = str(value or "").strip()
    return int(text) if re.fullmatch(r"\d{1,2}", text) else 0


def sip_headers(*, handoff_id: str, hops: int, summary: Any, attributes: Attributes, queue: str | None,
                budget: int = HEADER_BUDGET) -> dict[str, str]:
    """X-AI-* headers for the INVITE to the human, at most `budget` bytes in total (names, ': ', CRLF).
    `summary`: a redacted gateway.handoff.summary.Summary."""
    headers: dict[str, str] = {
        ID_HEADER: handoff_id,
        HOPS_HEADER: str(hops),
        "X-AI-Urgency": header_text(summary.urgency, 10) or "normal",
        "X-AI-Priority": str(attributes.priority),
    }
    if attributes.skill:
        headers["X-AI-Skill"] = header_text(attributes.skill, 64)
    if attributes.language:
        headers["X-AI-Language"] = attributes.language
    if attributes.vip:
        headers["X-AI-VIP"] = "true"
    if queue:
        headers["X-AI-Queue"] = header_text(queue, 64)
    headers["X-AI-Sentiment"] = summary.sentiment
    headers["X-AI-Reason"] = header_text(summary.reason, 120) or "unspecified"

    def size(h: dict[str, str]) -> int:
        return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in h.items())

    left = budget - size(headers) - len("X-AI-Summary") - 4
    if left >= 20:
        headers["X-AI-Summary"] = header_text(summary.text, min(SUMMARY_MAX, left))
        while size(headers) > budget:  # multi-byte characters: shorten until the bytes fit
            cut = headers["X-AI-Summary"]
            headers["X-AI-Summary"] = header_text(cut[:-4], len(cut) - 4)
    return headers
