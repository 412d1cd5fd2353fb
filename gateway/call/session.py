"""One object per call: the model link, the call's audio formats, its playback and its control verbs.

It holds no socket and imports no web framework: the ingress's `MediaTransport` brings caller audio,
DTMF, marks and the end of the stream as events, and takes agent audio, `clear` and `mark` back.

Life of a call (`CallSession.run`):
  stream start -> profile -> model link (session.update + greeting) -> caller audio in, agent audio
  out through the playback driver -> end (caller hung up, end_call, a transfer/conference, admin
  hang-up, model failure after the fallback prompt, or shutdown).

Actions the gateway starts (transfer, escalation, conference, hang-up, end_call, fallback) first stop
new agent audio and let what was sent play out, then act: the caller hears "Transferring you..." in
full, and the switch never holds queued audio at the moment the channel leaves (a voxcom
mod_audio_stream channel wedges if it does). Barge-in never waits: it jumps the queue.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import metrics as m
from gateway.audio.formats import CallAudio
from gateway.call.control import CallControlError, ErrorKind
from gateway.call.model_link import ModelLink, NullLink, RealtimeLink
from gateway.call.playback import Playback
from gateway.call.tools import TOOLS, run_tool, schemas
from gateway.call.transport import (
    CallerAudio,
    Dtmf,
    MarkPlayed,
    MediaTransport,
    StreamStart,
    StreamStopped,
    StreamText,
)
from gateway.handoff.briefing import briefing_for
from gateway.log import fields, pii
from gateway.outbound.amd import AmdScreen, amd_screen
from gateway.outbound.context import call_context, call_greeting
from gateway.profiles import Profile, ProfileSet
from gateway.proto import realtime as rt
from gateway.proto.audio_stream import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    StreamProtocolError,
)
from gateway.records.recorder import CallRecorder, Records
from gateway.records.redact import NO_REDACTION, Redactor
from gateway.settings import Settings

log = logging.getLogger("gateway.call")

FINISH_TIMEOUT_S = 30.0  # longest goodbye / fallback prompt we wait for before acting anyway
CONFIRMATION_WAIT_S = 10.0  # for the model's spoken confirmation of a transfer before acting anyway
SETTLE_S = 0.02  # after the playout clock says "played": one more frame for the far end's write buffer


class Control(Protocol):
    """Call-control verbs of one call (FreeSWITCH over ESL, or Twilio's REST API)."""

    async def hangup(self, cause: str = ...) -> None: ...
    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None: ...
    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None: ...
    async def add_participant(self, target: str) -> None: ...
    def release(self) -> None: ...


ControlFactory = Callable[["CallSession", StreamStart], "Control | None"]


@dataclass
class CallStats:
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    barge_ins: int = 0
    model_errors: int = 0
    underruns: int = 0
    last_reply_latency_ms: float | None = None
    reply_latencies_ms: list[float] = field(default_factory=list)


class _InputTimeline:
    """When each millisecond of caller audio reached us, so the model's `audio_end_ms` (a position in
    the input audio) becomes a clock time: the end of the caller's speech.

    The last `keep` frames as a packed ring of (input ms at frame end, clock) pairs, written in place:
    4 KB per call and no object kept per frame. A deque of tuples was 21 KB per call and two objects
    per frame (docs/benchmarks.md, memory per call)."""

    __slots__ = ("ms", "_points", "_keep", "_next", "_count")

    # 5 s of 20 ms frames: the model reports the end of speech within its silence window (~0.5 s) of it.
    def __init__(self, keep: int = 250) -> None:
        self.ms = 0.0
        self._points = array("d", bytes(16 * keep))  # [end_ms, clock] * keep
        self._keep = keep
        self._next = 0  # the slot the next frame takes (the oldest kept one once the ring is full)
        self._count = 0

    def add(self, ms: float, now: float) -> None:
        self.ms = total = self.ms + ms
        i = self._next
        points = self._points
        points[2 * i] = total
        points[2 * i + 1] = now
        i += 1
        keep = self._keep
        self._next = i if i < keep else 0
        if self._count < keep:
            self._count += 1

    def time_of(self, audio_ms: float) -> float | None:
        """The clock time at which the input reached `audio_ms`: the first kept frame ending at or after
        it, less the rest of that frame; before the oldest kept frame, the oldest one's estimate."""
        points, keep, count = self._points, self._keep, self._count
        first = (self._next - count) % keep
        k = bisect_left(range(count), audio_ms, key=lambda k: points[2 * ((first + k) % keep)])
        if k == count:
            return None
        j = 2 * ((first + k) % keep)
        return points[j + 1] - (points[j] - audio_ms) / 1000.0


class CallSession:
    def __init__(self, transport: MediaTransport, *, settings: Settings, profiles: ProfileSet,
                 fallback_audio: Callable[[str, int], bytes], control_factory: ControlFactory | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 model_factory: Callable[[CallSession], ModelLink] | None = None,
                 records: Records | None = None) -> None:
        self.transport = transport
        self.settings = settings
        self.profiles = profiles
        self._fallback_audio = fallback_audio
        self._control_factory = control_factory
        self._model_factory = model_factory
        self._clock = clock
        self.uuid = ""
        self.start_info: StreamStart | None = None
        self.rate = settings.default_rate
        self.profile: Profile | None = None
        self.control: Control | None = None
        self.playback_mode = "stream"
        self.state = "starting"
        self.outcome: str | None = None
        self.last_error: str | None = None
        self.started_wall = time.time()
        self.started = clock()
        self.ended: float | None = None
        self.stats = CallStats()
        self.transcript: list[dict[str, str]] = []
        self.audio: CallAudio | None = None
        self.playback: Playback | None = None
        self._model: ModelLink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._response_active = False
        self._response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._dropped_items: set[str] = set()
        self._generated_ms: dict[str, float] = {}
        self._input = _InputTimeline()
        self._speech_ended_at: float | None = None
        self._leaving = False  # an action that ends or moves the call is under way
        self._screen: AmdScreen | None = None  # outbound answering-machine detection, until its verdict
        # A warm transfer's hold audio is playing to the caller (gateway/handoff/warm.py): the model hears
        # silence instead of the caller and nothing it says reaches the call, until the AI takes them back.
        self.on_hold = False
        self._hold_silence = b""
        self.amd_verdict: dict[str, Any] | None = None
        self._responses_done = 0
        self._closed = False  # close() ran: the receive loop stops
        # Records (gateway/records/): every text leaving the call goes through the profile's redactor.
        self._records = records
        self.recorder: CallRecorder | None = None
        self.redactor: Redactor = NO_REDACTION
        self._memory = ""
        self._summary: asyncio.Future[str] | None = None  # the model's post-call summary, when asked for
        # Other out-of-band responses (gateway/handoff/summary.py): metadata purpose -> on response.done.
        self.out_of_band: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._speech_start_ms: float | None = None
        self._speech_end_ms: float | None = None
        self._dispatch_table: dict[str, Callable[[dict[str, Any]], None]] = {
            "error": self._on_error,
            "response.created": self._on_response_created,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio_transcript.done": self._on_agent_transcript,
            "conversation.item.input_audio_transcription.completed": self._on_caller_transcript,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "response.function_call_arguments.done": self._on_function_call,
            "response.done": self._on_response_done,
        }

    # ------------------------------------------------------------------ public view (admin API)
    @property
    def meta(self) -> StreamStart:
        return self.start_info or StreamStart(call_id=self.uuid, rate=self.rate)

    def info(self) -> dict[str, Any]:
        now = self._clock()
        redact = self.settings.log_redact_pii
        meta = self.meta
        playout = self.playback.clock if self.playback else None
        return {
            "uuid": self.uuid,
            "ingress": self.transport.codec_name,
            "state": self.state,
            "outcome": self.outcome,
            "caller": "[redacted]" if redact and meta.caller else self.redactor.number(meta.caller),
            "callee": "[redacted]" if redact and meta.callee else self.redactor.number(meta.callee),
            "call_id": meta.sip_call_id,
            "worker": meta.worker,
            "profile": self.profile.name if self.profile else None,
            "rate": self.rate,
            "started_at": self.started_wall,
            "duration_s": round((self.ended or now) - self.started, 3),
            "agent_audio_s": round(playout.stats.sent_ms / 1000.0, 3) if playout else 0.0,
            "frames_in": self.stats.frames_in,
            "frames_out": self.stats.frames_out,
            "barge_ins": self.stats.barge_ins,
            "underruns": playout.stats.underruns if playout else 0,
            "model_errors": self.stats.model_errors,
            "last_reply_latency_ms": self.stats.last_reply_latency_ms,
            "last_error": self.last_error,
            "call_control": self.control is not None,
            "amd": self.amd_verdict,
        }

    # ------------------------------------------------------------------ verbs (admin API, tools)
    def _require_control(self) -> Control:
        if self.control is None:
            raise CallControlError("call control unavailable for this call", kind=ErrorKind.UNAVAILABLE)
        return self.control

    def resolve(self, target: str) -> str:
        return (self.profile.resolve_target(target) if self.profile else None) or target

    async def transfer(self, target: str) -> str:
        """Operator transfer: stop the agent, let the sent audio play out, then move the call."""
        control = self._require_control()
        target = self.resolve(target)
        await self._quiet_then(lambda: control.transfer(target), "transferred")
        return target

    async def add_participant(self, target: str) -> str:
        control = self._require_control()
        target = self.resolve(target)
        await self._quiet_then(lambda: control.add_participant(target), "conference")
        return target

    async def hangup(self, reason: str = "admin hangup") -> None:
        """End the call: through call control when available, else by ending the stream."""
        log.info("hangup requested", extra=fields(call=self.uuid, reason=reason))
        self.outcome = self.outcome or "hangup"
        if self.control is not None:
            try:
                await self._quiet_then(self.control.hangup, None)
            except Exception as exc:
                log.warning("hangup via call control failed", extra=fields(call=self.uuid, error=str(exc)))
        await self.close(CLOSE_NORMAL, reason)

    def send_to_model(self, event: dict[str, Any]) -> bool:
        """Send one client event on the live model session (an out-of-band request, an instruction);
        False when the call has no connected model (embedded engine down, call over)."""
        if self._model is None or self.state != "active" or not getattr(self._model, "connected", True):
            return False
        self._model.send(event)
        return True

    def instruct(self, text: str) -> bool:
        """Tell the model something that happened outside the conversation and let it speak about it."""
        return self.send_to_model(rt.user_text_item(text)) and self.send_to_model(rt.response_create())

    def say(self, text: str) -> bool:
        """Have the agent say `text` verbatim (the greeting contract both model backends follow)."""
        return self.send_to_model(rt.greeting_response(text))

    async def speak_then(self, text: str, act: Callable[[], Any], outcome: str | None) -> None:
        """Have the agent say `text` verbatim (e.g. introduce the human), wait (bounded) until the caller
        heard it, then act as `act_when_quiet` does."""
        done_before = self._responses_done
        if self.say(text):
            await self._confirmation_played(done_before)
        await self._quiet_then(act, outcome)

    async def say_and_wait(self, text: str) -> None:
        """Have the agent say `text` verbatim and wait (bounded) until the caller heard it; the call goes
        on as before (a warm transfer starts the profile's hold audio then, gateway/handoff/warm.py)."""
        done_before = self._responses_done
        if self.say(text):
            await self._confirmation_played(done_before)
        self._leaving = False
        if self.playback is not None:
            self.playback.accepting = True

    def hold(self, on: bool) -> None:
        """Put the caller on hold from the AI (a warm transfer's hold audio plays over the call) or take
        them back. On hold the model gets silence in place of the caller's audio, so nothing the caller
        says there gets an answer over the hold audio (a turn they started is closed by that silence and
        its reply dropped), their DTMF is not passed on, and any agent audio is dropped; the model keeps
        its session and conversation, so after the hold it goes on where it was."""
        if on == self.on_hold:
            return
        self.on_hold = on
        log.info("caller on hold from the ai" if on else "caller back from hold",
                 extra=fields(call=self.uuid))
        if on and self._response_active and self._model is not None and self.state == "active":
            self._model.send(rt.response_cancel())  # a reply under way would play over the hold audio
            if self._response_id:
                self._dropped_responses.add(self._response_id)
            self._response_active = False

    async def act_when_quiet(self, act: Callable[[], Any], outcome: str | None) -> None:
        """Public form of `_quiet_then` for verbs built outside the call (gateway/handoff/)."""
        await self._quiet_then(act, outcome)

    async def _quiet_then(self, act: Callable[[], Any], outcome: str | None) -> None:
        """Stop new agent audio, wait until the far end has played what it already holds, then run
        `act`. On failure the call goes on (agent audio resumes)."""
        self._leaving = True
        if self.playback is not None:
            self.playback.stop_new()
            await self.playback.played_out(FINISH_TIMEOUT_S)
            await asyncio.sleep(SETTLE_S)
        try:
            await act()
        except BaseException:
            self._leaving = False
            if self.playback is not None:
                self.playback.accepting = True
            raise
        if outcome is not None:
            self.outcome = outcome
            self._record_event("handoff", {"outcome": outcome, "by": "operator"})

    async def close(self, code: int, reason: str) -> None:
        await self.transport.close(code, reason)
        self._closed = True

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        m.ACTIVE_CALLS.inc()
        try:
            await self._run()
        except StreamProtocolError as exc:
            self.outcome = "refused"
            self.last_error = exc.reason
            m.STREAMS_REFUSED.labels(reason=_reason_label(exc.close_code)).inc()
            log.warning("stream refused",
                        extra=fields(call=self.uuid, ingress=self.transport.codec_name,
                                     close_code=exc.close_code, reason=exc.reason))
            await self.close(exc.close_code, exc.reason)
        except asyncio.CancelledError:
            self.outcome = self.outcome or "shutdown"
            await self.close(CLOSE_GOING_AWAY, "gateway shutting down")
            raise
        except Exception as exc:  # a bug must end this call only
            self.outcome = "error"
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("call failed", extra=fields(call=self.uuid))
            await self.close(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await self._finish()

    async def _finish(self) -> None:
        await self._ask_model_for_summary()  # before the model session closes
        self.state = "ended"
        self.ended = self._clock()
        for task in list(self._tasks):
            task.cancel()
        if self._model is not None:
            await self._model.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.control is not None:  # the call is over for us: no more of its events
            self.control.release()
        m.ACTIVE_CALLS.dec()
        self.outcome = self.outcome or "completed"
        m.CALLS.labels(outcome=self.outcome).inc()
        self._record_end()
        log.info(
            "call ended",
            extra=fields(call=self.uuid, outcome=self.outcome, duration_s=round(self.ended - self.started, 3),
                         frames_in=self.stats.frames_in, frames_out=self.stats.frames_out,
                         barge_ins=self.stats.barge_ins, underruns=self.stats.underruns),
        )

    async def _run(self) -> None:
        start = await self.transport.start(self.settings.metadata_timeout_s)
        self.start_info = start
        self.uuid = start.call_id
        self.rate = start.rate
        self.profile = self.profiles.select(start.profile, start.callee)
        self.redactor = Redactor(self.profile.records.redaction)
        # Outbound calls with `amd:`: the callee is screened for an answering machine before the agent
        # speaks or hears anything (gateway/outbound/amd.py); it greets a human itself.
        self._screen = amd_screen(start.extra, self.profile, start.rate, start.encoding,
                                  call_greeting(start.extra) or self.profile.greeting)
        if self._records is not None:
            self.recorder = self._records.open_call(self.uuid, start, self.profile, self._clock)
            self._memory = await self._records.memory_for(self.recorder.caller_key, self.profile.records,
                                                          self.recorder.tenant)
        # A listen-only session (the handoff note-taker) shares the caller's channel: it gets no call
        # control, so nothing it does (or fails at) can hang up or move the call.
        if self._control_factory is not None and not self.profile.listen_only:
            try:
                self.control = self._control_factory(self, start)
            except Exception as exc:
                log.warning("call control unavailable", extra=fields(call=self.uuid, error=str(exc)))
        self.audio = CallAudio(start.rate, start.encoding)
        self.playback_mode = self.settings.playback_mode.get(start.worker, "stream")
        frame_ms: float = self.transport.frame_ms
        lead_ms: float = self.settings.playout_lead_ms
        files = None
        max_chunk_ms = None
        if self.playback_mode == "file" and self.control is not None and hasattr(self.control, "play"):
            # Upstream module: each message becomes a temp file played with uuid_broadcast. 20 ms files
            # would mean 50 broadcasts a second; larger chunks keep FreeSWITCH's work sane, and barge-in
            # still stops at once through uuid_break.
            frame_ms = self.settings.file_chunk_ms
            lead_ms = max(lead_ms, 2 * frame_ms)
            max_chunk_ms = self.settings.file_max_chunk_ms
            files = self.control  # type: ignore[assignment]
        self.playback = Playback(self.transport, self.audio, self._clock, lead_ms=lead_ms, frame_ms=frame_ms,
                                 more_coming=lambda: self._response_active,
                                 on_first_audio=self._on_first_audio, on_underrun=self._on_underrun,
                                 files=files, max_chunk_ms=max_chunk_ms, stats=self.stats)
        if files is not None:
            self.control.on_play_file = self.playback.on_play_file  # type: ignore[union-attr]
        log.info(
            "call started",
            extra=fields(call=self.uuid, ingress=self.transport.codec_name, rate=self.rate,
                         profile=self.profile.name, worker=start.worker, call_id=start.sip_call_id,
                         caller=pii(self.redactor.number(start.caller)),
                         callee=pii(self.redactor.number(start.callee))),
        )
        self.state = "active"
        self._model = self._model_factory(self) if self._model_factory else self._make_model()
        self._spawn(self._model.run(self._setup_events()), "model")
        self._spawn(self.playback.run(), "playback")
        await self._receive()

    async def _receive(self) -> None:
        moved = False
        playback = self.playback
        assert playback is not None
        async for event in self.transport.events():
            if type(event) is CallerAudio:
                playback.pump_next()  # audio the null model queues now goes out in pump() below
                if self.stats.frames_in & 7:
                    self._on_caller_audio(event.audio)
                else:  # one frame in eight is timed: the histogram costs a lock per observe
                    t0 = time.perf_counter()
                    self._on_caller_audio(event.audio)
                    m.FRAME_WORK.observe(time.perf_counter() - t0)
                await playback.pump()  # send what is due now, without waking the driver
            elif isinstance(event, Dtmf):
                self.on_dtmf(event.digit)
            elif isinstance(event, MarkPlayed):
                playback.on_mark(event.name)
            elif isinstance(event, StreamText):
                log.info("stream text", extra=fields(call=self.uuid, text=pii(event.text)))
            elif isinstance(event, StreamStopped):
                log.info("stream stopped by the far end", extra=fields(call=self.uuid, reason=event.reason))
                break
            if self._closed:
                moved = True
                break
        if self.outcome is None and not moved:
            if self.meta.caller == "ai-coach":  # the AI leg of a conference (freeswitch-conf ai-coach)
                self.outcome = "coach"
            else:
                self.outcome = "caller_hangup" if not self._leaving else "completed"

    # ------------------------------------------------------------------ caller -> model
    def _on_caller_audio(self, audio: bytes) -> None:
        self.stats.frames_in += 1
        self.stats.bytes_in += len(audio)
        fmt = self.audio
        if self.state != "active" or self._model is None or not audio or fmt is None:
            return
        if self._screen is not None and not self._screen.feed(audio, self):
            return  # being screened for an answering machine: the model hears nothing yet
        if self.on_hold:  # the model hears silence of the same length: its clock and VAD go on
            if len(self._hold_silence) != len(audio):
                self._hold_silence = bytes([fmt.silence_byte]) * len(audio)
            audio = self._hold_silence
        self._input.add(len(audio) / fmt.bytes_per_ms, self._clock())
        self._model.append_audio(fmt.to_model(audio))

    def on_dtmf(self, digit: str) -> None:
        if self.on_hold:
            log.info("dtmf on hold: not passed to the model", extra=fields(call=self.uuid, digit=pii(digit)))
            return
        if self._model is not None and self.state == "active":
            log.info("dtmf", extra=fields(call=self.uuid, digit=pii(digit)))
            self._model.send(rt.user_text_item(f"[The caller pressed DTMF key {digit}]"))

    # ------------------------------------------------------------------ model -> caller
    def _make_model(self) -> ModelLink:
        s = self.settings
        assert self.audio is not None and self.profile is not None
        if s.model_backend.startswith("null"):
            return NullLink(mode=s.model_backend.removeprefix("null-"), audio_sink=self.model_audio,
                            silence_byte=0xFF if self.rate == 8000 else 0)
        per_append_ms = max(20, s.model_append_ms)
        return RealtimeLink(
            call_uuid=self.uuid, base_url=s.model_url, api_key=s.api_key(), model=s.model_name,
            profile=self.profile.name, dispatch=self.dispatch, on_failure=self._on_model_failure,
            connect_timeout=s.model_connect_timeout_s,
            max_pending_audio=max(1, s.max_pending_input_ms // per_append_ms),
            append_bytes=self.audio.model_bytes(s.model_append_ms),
        )

    def _setup_events(self) -> list[dict[str, Any]]:
        p = self.profile
        assert p is not None and self.audio is not None
        greeting, instructions = p.greeting, p.instructions + self._memory  # + caller memory
        brief = briefing_for(self.meta)  # the human leg of a warm transfer: the handoff's briefing
        if brief is not None:
            greeting, instructions = brief.greeting, instructions + brief.context
        events = [
            rt.session_update(audio_format=self.audio.model_format,
                              # + outbound: the call's direction and variables
                              instructions=instructions + call_context(self.meta.extra),
                              voice=p.voice, turn_detection=p.turn_detection.model_dump(),
                              tools=schemas(p.tools),
                              input_transcription=self.settings.input_transcription_model or None)
        ]
        greeting = call_greeting(self.meta.extra) or greeting  # an outbound call's own opening
        if greeting and self._screen is None:
            events.append(rt.greeting_response(greeting))
        return events

    def dispatch(self, event: dict[str, Any]) -> None:
        handler = self._dispatch_table.get(event["type"])
        if handler is None:
            return  # the protocol has many informational events; unknown ones are ignored by design
        try:
            handler(event)
        except Exception as exc:  # a malformed event must not end the call
            self.stats.model_errors += 1
            m.MODEL_ERRORS.labels(kind="bad_event").inc()
            log.warning("bad model event",
                        extra=fields(call=self.uuid, type=event.get("type"), error=str(exc)))

    def _on_response_created(self, event: dict[str, Any]) -> None:
        if _is_summary(event) or _purpose(event) in self.out_of_band:
            return  # the out-of-band post-call summary: not a reply to the caller
        self._response_active = True
        self._response_id = (event.get("response") or {}).get("id")

    def _on_response_done(self, event: dict[str, Any]) -> None:
        resp = event.get("response") or {}
        handler = self.out_of_band.get(_purpose(event) or "")
        if handler is not None:  # an out-of-band text response someone asked for: not a reply
            if self.recorder is not None:
                self.recorder.usage_from(resp)
            handler(resp)
            return
        if _is_summary(event):
            if self.recorder is not None:
                self.recorder.usage_from(resp)
            if self._summary is not None and not self._summary.done():
                self._summary.set_result(rt.response_text(resp) if resp.get("status") == "completed" else "")
            return
        self._responses_done += 1
        if resp.get("id") in (None, self._response_id):
            self._response_active = False
        if self.recorder is not None:
            self.recorder.usage_from(resp)
        if self.playback is not None:
            self.playback.reply_done()  # flush a partial last frame

    def _on_audio_delta(self, event: dict[str, Any]) -> None:
        self.model_audio(event.get("item_id"), event.get("response_id"), base64.b64decode(event["delta"]))

    def model_audio(self, item_id: str | None, response_id: str | None, payload: bytes) -> None:
        """Agent audio in the session's model format."""
        if self.state != "active" or self.audio is None or self.playback is None:
            return
        if self.profile is not None and self.profile.listen_only:
            return  # a note-taker: nothing it generates reaches the call
        if response_id in self._dropped_responses or item_id in self._dropped_items:
            return  # audio of a reply the caller interrupted, still in flight from the model
        if self.on_hold:
            return  # the caller hears the hold audio, not the agent
        if item_id is not None:
            generated = self._generated_ms.get(item_id, 0.0) + self.audio.model_ms(len(payload))
            self._generated_ms[item_id] = generated
        self.playback.enqueue(item_id, self.audio.from_model(payload))

    def _on_first_audio(self, item_id: str | None) -> None:
        """The first frame of a reply went to the caller: the reply latency ends here."""
        if self._speech_ended_at is None or item_id == "fallback":
            if self.recorder is not None:
                self.recorder.agent_audio_started(item_id, None)
            return
        latency = self._clock() - self._speech_ended_at
        self._speech_ended_at = None
        m.REPLY_LATENCY.observe(latency)
        self.stats.last_reply_latency_ms = round(latency * 1000.0, 1)
        self.stats.reply_latencies_ms.append(self.stats.last_reply_latency_ms)
        if self.recorder is not None:
            self.recorder.agent_audio_started(item_id, self.stats.last_reply_latency_ms)

    def _on_underrun(self) -> None:
        self.stats.underruns += 1
        m.UNDERRUNS.inc()

    def _on_agent_transcript(self, event: dict[str, Any]) -> None:
        text = str(event.get("transcript", ""))
        self.transcript.append({"role": "agent", "text": text})  # in clear: the call's own context
        item = event.get("item_id")
        if self.recorder is not None:
            text = self.recorder.turn("agent", text, item_id=item,
                                      audio_ms=self._generated_ms.get(item) if item else None)
        else:
            text = self.redactor.text(text)
        log.info("agent said", extra=fields(call=self.uuid, transcript=pii(text)))
        self._forward({"type": "transcript", "role": "agent", "text": text})

    def _on_caller_transcript(self, event: dict[str, Any]) -> None:
        text = str(event.get("transcript", ""))
        self.transcript.append({"role": "caller", "text": text})
        if self.recorder is not None:
            text = self.recorder.turn("caller", text, item_id=event.get("item_id"),
                                      start_ms=self._speech_start_ms, end_ms=self._speech_end_ms)
        else:
            text = self.redactor.text(text)
        log.info("caller said", extra=fields(call=self.uuid, transcript=pii(text)))
        self._forward({"type": "transcript", "role": "caller", "text": text})

    def _forward(self, doc: dict[str, Any]) -> None:
        if self.settings.log_redact_pii or self.transport.closed:
            return
        self._spawn(self.transport.send_side_text(doc), "forward")

    def _on_speech_stopped(self, event: dict[str, Any]) -> None:
        # The caller stopped speaking at `audio_end_ms` of the input audio, which the model reports
        # only after its silence window: the latency starts at the former, not at this event.
        end_ms = event.get("audio_end_ms")
        self._speech_end_ms = float(end_ms) if isinstance(end_ms, int | float) else None
        at = self._input.time_of(float(end_ms)) if isinstance(end_ms, int | float) else None
        self._speech_ended_at = at if at is not None else self._clock()

    def _on_speech_started(self, event: dict[str, Any]) -> None:
        """Barge-in: stop agent audio at once; cancel and truncate so the model knows what was heard."""
        self._speech_ended_at = None
        start_ms = event.get("audio_start_ms")
        self._speech_start_ms = float(start_ms) if isinstance(start_ms, int | float) else None
        pb = self.playback
        if pb is None or self._model is None or self._leaving:
            return
        if not (pb.busy() or self._response_active):
            return
        item_id, heard, queued_items = pb.interrupt()  # control jumps the queue
        assert self.profile is not None
        # Only an active response is cancelled (a cancel with none in flight earns an error event). If
        # the server's interrupt_response got there first, its response_cancel_not_active error is
        # benign and not counted as a model error (_on_error).
        if self._response_active:
            self._model.send(rt.response_cancel())
        if self._response_active and self._response_id:
            self._dropped_responses.add(self._response_id)
        self._response_active = False
        if not item_id and queued_items:
            # The reply was queued but not a sample of it played yet: the caller heard 0 ms of it.
            item_id = queued_items[0]
            heard = 0
        if item_id:
            heard = int(min(heard, self._generated_ms.get(item_id, 0.0)))
            self._model.send(rt.item_truncate(item_id, heard))
            self._dropped_items.add(item_id)
        self._dropped_items.update(i for i in queued_items if i != item_id)
        self.stats.barge_ins += 1
        m.BARGE_INS.inc()
        if self.recorder is not None:
            self.recorder.barge_in(item_id, heard)
        log.info("barge-in", extra=fields(call=self.uuid, item=item_id, heard_ms=heard))
        self._spawn(self.transport.clear(), "clear")
        if self.playback_mode == "file":
            self._spawn(pb.flush_files(), "flush")

    def _on_function_call(self, event: dict[str, Any]) -> None:
        self._spawn(self._tool(event), "tool")

    async def _tool(self, event: dict[str, Any]) -> None:
        """Run a model tool. A tool that moves the call (transfer, escalate, conference) is checked and
        answered first, so the model speaks its confirmation ("Transferring you..."); the verb runs once
        that reply has played out. If the verb then fails, the model is told and speaks again."""
        assert self.profile is not None and self._model is not None
        name = str(event.get("name", ""))
        tool = TOOLS.get(name)
        # The summary goes into SIP headers (X-AI-Summary): redacted by the profile's policy.
        summary = self.redactor.text(" / ".join(f"{t['role']}: {t['text']}" for t in self.transcript[-6:]))
        moves = tool is not None and tool.moves_call and self.control is not None
        deferred = _DeferredControl(self.control) if moves else None
        arguments = str(event.get("arguments", "{}"))
        if name == "escalate":  # its reason goes into X-AI-Reason: redacted like the summary
            arguments = _redacted_arguments(self.redactor, arguments)
        result = await run_tool(name, arguments,
                                control=deferred if deferred is not None else self.control,
                                profile=self.profile, call_uuid=self.uuid, summary=summary, call=self)
        ok = bool(result.output.get("ok"))
        call_id = event.get("call_id")
        self._record_event("tool", {"name": name, "arguments": _json_or_text(event.get("arguments", "{}")),
                                    "ok": ok, "output": result.output})
        done_before = self._responses_done
        if call_id and self._model is not None and self.state == "active":
            self._model.send(rt.function_call_output(str(call_id), result.output))
            if result.speak:
                self._model.send(rt.response_create())
        if ok and deferred is not None and deferred.pending is not None:
            await self._confirmation_played(done_before)
            try:
                await deferred.pending()
            except Exception as exc:
                ok = False
                self._leaving = False
                if self.playback is not None:
                    self.playback.accepting = True
                error = str(exc).strip() or type(exc).__name__
                log.warning("tool failed", extra=fields(call=self.uuid, tool=name, error=error))
                if self._model is not None and self.state == "active":
                    self._model.send(rt.user_text_item(f"[{name} failed: {error}. Tell the caller.]"))
                    self._model.send(rt.response_create())
            else:
                self.outcome = {"transfer_call": "transferred", "escalate": "escalated",
                                "add_participant": "conference"}.get(name, "transferred")
                self._record_event("handoff", {"outcome": self.outcome, "by": "tool", "tool": name})
        m.TOOL_CALLS.labels(tool=name if tool else "unknown", result="ok" if ok else "error").inc()
        log.info("tool call",
                 extra=fields(call=self.uuid, tool=name, ok=ok, error=result.output.get("error")))
        if result.end_call:
            self._leaving = True
            self._spawn(self._finish_after_playback("end_call"), "end")

    async def _confirmation_played(self, done_before: int) -> None:
        """Wait (bounded) for the reply that answers the tool result, then until the caller heard it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRMATION_WAIT_S
        while self._responses_done <= done_before and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await self._reply_played()

    async def _reply_played(self) -> None:
        """Wait (bounded) until the model has finished the current reply and the caller heard it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINISH_TIMEOUT_S
        while self._response_active and loop.time() < deadline:  # noqa: ASYNC110 - set by the dispatch
            await asyncio.sleep(0.02)
        self._leaving = True
        if self.playback is not None:
            await self.playback.played_out(max(0.0, deadline - loop.time()))
            self.playback.stop_new()
            await asyncio.sleep(SETTLE_S)

    def _on_error(self, event: dict[str, Any]) -> None:
        err = event.get("error") or {}
        if isinstance(err, dict):
            detail = f"{err.get('type')}/{err.get('code')}: {err.get('message')}"
        else:
            detail = str(err)
        if rt.is_fatal_error(event):
            self._on_model_failure("error_event", detail)
        else:  # one refused request (e.g. a cancel that raced the response's end): not a model error
            log.info("model refused a request", extra=fields(call=self.uuid, error=detail))

    # ------------------------------------------------------------------ failure path
    def _on_model_failure(self, kind: str, detail: str) -> None:
        if self.state != "active" or self._leaving:
            return
        if self.profile is not None and self.profile.listen_only:  # no fallback prompt into the call
            log.warning("listen-only model failed", extra=fields(call=self.uuid, kind=kind, error=detail))
            self.state = "fallback"
            self._spawn(self.close(CLOSE_NORMAL, "model failed"), "close")
            return
        self.state = "fallback"
        self.last_error = f"model {kind}: {detail}"
        self.stats.model_errors += 1
        m.MODEL_ERRORS.labels(kind=kind).inc()
        m.FALLBACKS.inc()
        log.error("model failed, playing fallback", extra=fields(call=self.uuid, kind=kind, error=detail))
        assert self.profile is not None and self.playback is not None and self.audio is not None
        self.playback.interrupt()
        self._response_active = False
        if self._model is not None:  # no more model audio or events for this call
            self._spawn(self._model.close(), "model-close")
        prompt = self._fallback_audio(self.profile.name, self.rate)
        self.playback.enqueue("fallback", self.audio.from_pcm16(prompt))
        self._spawn(self._finish_after_playback("fallback"), "fallback")

    async def _finish_after_playback(self, why: str) -> None:
        assert self.profile is not None
        self._leaving = True
        await self._reply_played()
        if why == "fallback":
            self.outcome = "fallback"
            fb = self.profile.fallback
            target = self.profile.resolve_target(fb.target) if fb.target else None
            if fb.action == "transfer" and self.control is not None and target:
                try:
                    await self.control.transfer(target)
                    self.outcome = "fallback_transferred"
                    self._record_event("handoff", {"outcome": self.outcome, "by": "fallback"})
                    log.info("fallback transfer", extra=fields(call=self.uuid, target=fb.target))
                    await self.close(CLOSE_NORMAL, "transferred")
                    return
                except Exception as exc:
                    log.warning("fallback transfer failed", extra=fields(call=self.uuid, error=str(exc)))
            await self.hangup("model failure")
        else:
            self.outcome = "completed"
            await self.hangup(why)

    # ------------------------------------------------------------------ records
    def _record_event(self, kind: str, data: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder.event(kind, data)

    async def _ask_model_for_summary(self) -> None:
        """With OpenAI, the post-call summary comes from the model: an out-of-band text response over the
        call's conversation, asked for after the caller left and before the session closes; bounded by
        `records_summary_timeout_s`, after which the extractive summary stays."""
        rec, model = self.recorder, self._model
        wanted = self.settings.records_model_summary
        if wanted is None:
            wanted = self.settings.openai_api_key is not None
        if (not wanted or rec is None or not rec.enabled or model is None
                or not getattr(model, "connected", False) or self.state != "active"
                or self.outcome in ("shutdown", "error", "refused", "fallback", "fallback_transferred")
                or not rec.turns):
            return
        self._summary = asyncio.get_running_loop().create_future()
        model.send(rt.summary_request(SUMMARY_INSTRUCTIONS))
        try:
            text = await asyncio.wait_for(self._summary, self.settings.records_summary_timeout_s)
        except TimeoutError:
            text = ""
            log.warning("model summary timed out", extra=fields(call=self.uuid))
        if text:
            rec.model_summary = text

    def _record_end(self) -> None:
        if self.recorder is None:
            return
        playout = self.playback.clock if self.playback else None
        duration_s = (self.ended or self._clock()) - self.started
        self.recorder.ended(self.outcome or "completed", duration_s=duration_s,
                            stats={"barge_ins": self.stats.barge_ins,
                                   "reply_latencies_ms": list(self.stats.reply_latencies_ms),
                                   "caller_audio_s": self._input.ms / 1000.0,
                                   "agent_audio_s": playout.stats.sent_ms / 1000.0 if playout else 0.0,
                                   "tenant": self.meta.extra.get("tenant") if self.start_info else None})

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{name}-{self.uuid}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, ConnectionResetError):
            log.error("call task failed", extra=fields(call=self.uuid, task=task.get_name(), error=repr(exc)))
            if task.get_name().startswith(("playback", "model")):
                # Without playback or a model link the call cannot go on: end it rather than hang silent.
                self.last_error = repr(exc)
                self.outcome = self.outcome or "error"
                loop = asyncio.get_running_loop()
                loop.create_task(self.close(CLOSE_INTERNAL_ERROR, "internal error"))


def _redacted_arguments(redactor: Redactor, raw: str) -> str:
    import json

    try:
        return json.dumps(redactor.value(json.loads(raw)))
    except ValueError:
        return raw  # not JSON: the tool refuses it anyway


def _json_or_text(raw: Any) -> Any:
    import json

    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


class _DeferredControl:
    """Stands in for call control while a tool is checked: records the verb to run it later."""

    def __init__(self, control: Control | None) -> None:
        self._control = control
        self.pending: Callable[[], Any] | None = None

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        c = self._need()
        self.pending = lambda: c.transfer(target, headers)

    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None:
        c = self._need()
        self.pending = lambda: c.escalate(target, reason, urgency, summary)

    async def add_participant(self, target: str) -> None:
        c = self._need()
        self.pending = lambda: c.add_participant(target)

    def _need(self) -> Control:
        if self._control is None:
            raise CallControlError("call control unavailable", kind=ErrorKind.UNAVAILABLE)
        return self._control


def _reason_label(code: int) -> str:
    from gateway.proto import audio_stream as wire

    return {
        wire.CLOSE_TOO_BIG: "too_big",
        wire.CLOSE_INVALID_PAYLOAD: "invalid_payload",
        wire.CLOSE_UNSUPPORTED_DATA: "unsupported_data",
        wire.CLOSE_PROTOCOL_ERROR: "protocol_error",
        wire.CLOSE_POLICY_VIOLATION: "policy",
        wire.CLOSE_TRY_AGAIN_LATER: "tenant_cap",  # a Twilio stream of a full tenant (media_server.py)
    }.get(code, "other")


SUMMARY_INSTRUCTIONS = (
    "The call is over; the caller cannot hear you. Write a summary of this call for the business's staff "
    "in at most three sentences: who called, what they wanted, what was done or promised, and anything "
    "still to do. Plain text, no lists, no greeting."
)


def _purpose(event: dict[str, Any]) -> str | None:
    meta = (event.get("response") or {}).get("metadata")
    return str(meta.get("purpose")) if isinstance(meta, dict) and meta.get("purpose") else None


def _is_summary(event: dict[str, Any]) -> bool:
    meta = (event.get("response") or {}).get("metadata")
    return isinstance(meta, dict) and meta.get("purpose") == rt.SUMMARY_PURPOSE
