"""Answering-machine detection (AMD) on an outbound call, before the agent says anything.

The classic rules (those of Asterisk's app_amd, https://docs.asterisk.org/Asterisk_22_Documentation/API_Documentation/Dialplan_Applications/AMD/):
a person answers with a short word ("Hello?") and then waits; a machine plays a long greeting and a
beep. So, on the callee's audio from the moment of answer:

    speech longer than `greeting_max_ms` without a pause of `pause_ms`   -> machine (long greeting)
    a beep (one steady pure tone, 300-2500 Hz, >= `beep_min_ms`)         -> machine (beep)
    a greeting within the limit followed by `pause_ms` of quiet          -> human
    nothing said for `initial_silence_ms`                               -> human (greet: never leave
                                                                           someone who answered in silence)

Speech is frame energy above `speech_dbfs`; a beep is a frame whose spectrum (numpy FFT, Hann window)
has at least `tone_purity` of its energy within one narrow peak, at the same frequency frame after
frame. Human speech is harmonic (many peaks), so it does not pass for a beep.

A profile turns it on (`amd:`); on a machine the call hangs up, or (`on_machine: message`) waits for the
beep and then the agent leaves `message`, and the call ends after it played. `AmdDetector` is pure (bytes
in, verdict out); `AmdScreen` is the call's adapter (gateway/call/session.py feeds it the callee's audio
and withholds it from the model until the verdict).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gateway.audio import g711
from gateway.log import fields
from gateway.proto import realtime as rt

if TYPE_CHECKING:
    from gateway.profiles import Profile

log = logging.getLogger("gateway.amd")


class AmdConfig(BaseModel):
    """The `amd:` key of a profile."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    greeting_max_ms: int = Field(1500, ge=300, le=10000)  # longer than this: a machine
    pause_ms: int = Field(800, ge=200, le=5000)  # quiet that ends a greeting
    initial_silence_ms: int = Field(3500, ge=500, le=15000)
    beep_min_ms: int = Field(120, ge=60, le=2000)
    on_machine: Literal["hangup", "message"] = "hangup"
    message: str | None = Field(None, max_length=600)  # spoken after the beep (on_machine: message)
    beep_wait_ms: int = Field(20000, ge=0, le=60000)  # then the message anyway
    speech_dbfs: float = Field(-35.0, ge=-60, le=-10)
    tone_purity: float = Field(0.95, ge=0.5, le=0.999)  # measured: a G.711 beep 0.999, espeak speech <= 0.88


@dataclass(frozen=True)
class Verdict:
    kind: Literal["human", "machine"]
    reason: str  # short_greeting, silence, long_greeting, beep
    at_ms: int


class AmdDetector:
    """Feed 20 ms frames of L16 (or whole chunks); `verdict` is set once decided, `beep_end_ms` when a
    beep has ended (for leaving a message after it)."""

    def __init__(self, rate: int, config: AmdConfig) -> None:
        self.rate = rate
        self.cfg = config
        self.frame = rate // 50
        self._pending = np.zeros(0, dtype=np.int16)
        self._nfft = 1024
        self._window = np.hanning(self.frame)
        self.t_ms = 0
        self.verdict: Verdict | None = None
        self._speech_start: int | None = None
        self._last_speech: int | None = None
        self._tone_freq: float | None = None
        self._tone_ms = 0
        self.beep_start_ms: int | None = None
        self.beep_end_ms: int | None = None

    def feed_pcm16(self, pcm: bytes) -> Verdict | None:
        samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = buf.size // self.frame
        for i in range(n):
            self._frame(buf[i * self.frame:(i + 1) * self.frame])
        self._pending = buf[n * self.frame:].copy()
        return self.verdict

    def _frame(self, frame: np.ndarray) -> None:
        self.t_ms += 20
        x = frame.astype(np.float64)
        rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
        dbfs = 20 * np.log10(max(rms, 1e-9) / 32768.0)
        loud = dbfs > self.cfg.speech_dbfs
        tone = self._tone(x) if loud else None
        self._track_beep(tone)
        if self.verdict is not None:
            return
        if self.beep_start_ms is not None and self._tone_ms >= self.cfg.beep_min_ms:
            self._decide("machine", "beep")
            return
        if loud:
            if self._speech_start is None:
                self._speech_start = self.t_ms - 20
            self._last_speech = self.t_ms
            if self.t_ms - self._speech_start > self.cfg.greeting_max_ms:
                self._decide("machine", "long_greeting")
        elif self._speech_start is None:
            if self.t_ms >= self.cfg.initial_silence_ms:
                self._decide("human", "silence")
        elif self._last_speech is not None and self.t_ms - self._last_speech >= self.cfg.pause_ms:
            self._decide("human", "short_greeting")

    def _tone(self, x: np.ndarray) -> float | None:
        """The frequency of a pure tone in this frame, or None."""
        spectrum = np.abs(np.fft.rfft(x * self._window, self._nfft)) ** 2
        total = float(spectrum.sum())
        if total <= 0:
            return None
        peak = int(np.argmax(spectrum))
        # A pure tone's energy spreads over the Hann window's main lobe: +-2 bins of the frame's own
        # resolution (rate / frame), i.e. +-100 Hz for a 20 ms frame, whatever the zero-padding.
        half = 2 * self._nfft // self.frame + 1
        lo, hi = max(0, peak - half), peak + half + 1
        purity = float(spectrum[lo:hi].sum()) / total
        freq = peak * self.rate / self._nfft
        if purity >= self.cfg.tone_purity and 300.0 <= freq <= 2500.0:
            return freq
        return None

    def _track_beep(self, tone: float | None) -> None:
        if tone is not None and (self._tone_freq is None or abs(tone - self._tone_freq) <= 40.0):
            if self._tone_freq is None:
                self._tone_freq, self._tone_ms = tone, 0
            self._tone_ms += 20
            if self._tone_ms >= self.cfg.beep_min_ms and self.beep_start_ms is None:
                self.beep_start_ms = self.t_ms - self._tone_ms
            return
        if self.beep_start_ms is not None and self.beep_end_ms is None:
            self.beep_end_ms = self.t_ms - 20
        self._tone_freq = tone
        self._tone_ms = 20 if tone is not None else 0

    def _decide(self, kind: Literal["human", "machine"], reason: str) -> None:
        self.verdict = Verdict(kind, reason, self.t_ms)


class AmdScreen:
    """One outbound call's screening: `feed()` returns True once the model may hear the callee (a
    human answered); until then, and for good on a machine, the callee's audio goes nowhere else."""

    def __init__(self, config: AmdConfig, rate: int, encoding: str, greeting: str | None) -> None:
        self.cfg = config
        self.detector = AmdDetector(rate, config)
        self.encoding = encoding
        self.greeting = greeting
        self.verdict: Verdict | None = None
        self._acted = False

    def feed(self, audio: bytes, session: Any) -> bool:
        if self._acted and self.verdict is not None and self.verdict.kind == "human":
            return True
        pcm = g711.ulaw_to_pcm16(audio) if self.encoding == "pcmu" else audio
        verdict = self.detector.feed_pcm16(pcm)
        if verdict is None or self._acted:
            if self._acted and self.cfg.on_machine == "message" and self._waiting_beep():
                self._maybe_leave_message(session)
            return False
        self.verdict = verdict
        self._acted = True
        log.info("answering machine detection", extra=fields(call=session.uuid, verdict=verdict.kind,
                                                             reason=verdict.reason, after_ms=verdict.at_ms))
        session.amd_verdict = {"kind": verdict.kind, "reason": verdict.reason, "after_ms": verdict.at_ms}
        if verdict.kind == "human":
            if self.greeting:
                session._model.send(rt.greeting_response(self.greeting))
            return False  # this frame was the pause after "Hello?": nothing to pass on
        session.outcome = "machine"
        if self.cfg.on_machine == "hangup" or not self.cfg.message:
            session._spawn(session.hangup("answering machine"), "amd-hangup")
        else:
            self._maybe_leave_message(session)
        return False

    def _waiting_beep(self) -> bool:
        return not getattr(self, "_message_sent", False)

    def _maybe_leave_message(self, session: Any) -> None:
        d = self.detector
        beep_over = d.beep_end_ms is not None
        waited_out = d.t_ms - (self.verdict.at_ms if self.verdict else 0) >= self.cfg.beep_wait_ms
        if not (beep_over or waited_out) or getattr(self, "_message_sent", False):
            return
        self._message_sent = True
        log.info("leaving a message", extra=fields(call=session.uuid, after_beep=beep_over))
        session._model.send(rt.greeting_response(str(self.cfg.message).replace('"', "'")))
        session._spawn(_hang_up_after_message(session), "amd-message")


async def _hang_up_after_message(session: Any) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not session._response_active and loop.time() < deadline:  # noqa: ASYNC110 - set by the dispatch
        await asyncio.sleep(0.02)
    session._leaving = True
    await session._reply_played()
    session.outcome = "voicemail"
    await session.hangup("voicemail left")


def amd_screen(extra: dict[str, Any], profile: Profile | None, rate: int, encoding: str,
               greeting: str | None) -> AmdScreen | None:
    """The call's screen: only outbound agent calls whose profile has `amd:` enabled."""
    cfg = getattr(profile, "amd", None)
    if cfg is None or not cfg.enabled or extra.get("direction") != "outbound":
        return None
    return AmdScreen(cfg, rate, encoding, greeting)
