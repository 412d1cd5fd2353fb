"""One object per call: owns the stream socket, the resamplers, the playout clock and the model link.

Life of a call (`CallSession.run`):
  metadata frame -> profile -> model link (session.update + greeting) -> caller audio in, agent audio out
  paced by the playout clock -> end (caller hung up, tool end_call, admin hangup, model failure after
  the fallback prompt, or shutdown).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from gateway import metrics as m
from gateway.audio import g711
from gateway.audio.playout import PlayoutClock
from gateway.audio.resample import StreamResampler
from gateway.call.model_link import ModelLink, NullLink, RealtimeLink
from gateway.call.tools import run_tool
from gateway.log import fields, pii
from gateway.profiles import Profile, ProfileSet
from gateway.proto import audio_stream as wire
from gateway.proto import realtime as rt
from gateway.settings import Settings

log = logging.getLogger("gateway.call")

FRAME_MS = 20
FINISH_TIMEOUT_S = 30.0  # longest goodbye / fallback prompt we wait for before hanging up anyway


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


@dataclass
class _Segment:
    item_id: str | None
    pcm: bytearray


class CallSession:
    def __init__(
        self,
        uuid: str,
        ws: web.WebSocketResponse,
        *,
        settings: Settings,
        profiles: ProfileSet,
        fallback_audio: Callable[[str, int], bytes],
        control_plane: Any = None,
        query: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uuid = uuid
        self.ws = ws
        self.settings = settings
        self.profiles = profiles
        self._fallback_audio = fallback_audio
        self._control_plane = control_plane
        self._query = query or {}
        self._clock = clock
        self.meta = wire.StreamMetadata()
        self.rate = settings.default_rate
        self.profile: Profile | None = None
        self.control: Any = None
        self.state = "starting"
        self.outcome: str | None = None
        self.last_error: str | None = None
        self.started_wall = time.time()
        self.started = clock()
        self.ended: float | None = None
        self.stats = CallStats()
        self.transcript: list[dict[str, str]] = []
        self.playout = PlayoutClock(clock, lead_ms=settings.playout_lead_ms, frame_ms=FRAME_MS)
        self._model: ModelLink | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._out: deque[_Segment] = deque()
        self._out_ready = asyncio.Event()
        self._response_active = False
        self._response_id: str | None = None
        self._dropped_responses: set[str] = set()
        self._dropped_items: set[str] = set()
        self._generated_ms: dict[str, float] = {}
        self._speech_stopped_at: float | None = None
        self._ending = False  # tool end_call / fallback: finish playing, then hang up
        self._closed = asyncio.Event()
        self._pumping = False
        self._in_receive = False  # caller audio being handled: the receive loop pumps right after
        self._frame_len = 0
        self._up: StreamResampler | None = None
        self._down: StreamResampler | None = None
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
    def info(self) -> dict[str, Any]:
        now = self._clock()
        redact = self.settings.log_redact_pii
        return {
            "uuid": self.uuid,
            "state": self.state,
            "outcome": self.outcome,
            "caller": "[redacted]" if redact and self.meta.caller else self.meta.caller,
            "callee": "[redacted]" if redact and self.meta.callee else self.meta.callee,
            "call_id": self.meta.call_id,
            "worker": self.meta.worker,
            "profile": self.profile.name if self.profile else None,
            "rate": self.rate,
            "started_at": self.started_wall,
            "duration_s": round((self.ended or now) - self.started, 3),
            "agent_audio_s": round(self.playout.stats.sent_ms / 1000.0, 3),
            "frames_in": self.stats.frames_in,
            "frames_out": self.stats.frames_out,
            "barge_ins": self.stats.barge_ins,
            "underruns": self.playout.stats.underruns,
            "model_errors": self.stats.model_errors,
            "last_reply_latency_ms": self.stats.last_reply_latency_ms,
            "last_error": self.last_error,
            "call_control": self.control is not None,
        }

    async def hangup(self, reason: str = "admin hangup") -> None:
        """End the call: through FreeSWITCH when call control is available, else by ending the stream."""
        log.info("hangup requested", extra=fields(call=self.uuid, reason=reason))
        self.outcome = self.outcome or "hangup"
        if self.control is not None:
            try:
                await self.control.hangup()
            except Exception as exc:
                log.warning("hangup via call control failed", extra=fields(call=self.uuid, error=str(exc)))
        await self.close(wire.CLOSE_NORMAL, reason)

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            # aiohttp sends the close frame, waits (bounded) for the module's reply, and the server then
            # drops TCP: a close frame with TCP left open blocks FreeSWITCH's channel teardown.
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, message=reason.encode()[:120])
        self._closed.set()

    # ------------------------------------------------------------------ main
    async def run(self) -> None:
        m.ACTIVE_CALLS.inc()
        try:
            await self._run()
        except wire.StreamProtocolError as exc:
            self.outcome = "refused"
            self.last_error = exc.reason
            m.STREAMS_REFUSED.labels(reason=_reason_label(exc.close_code)).inc()
            log.warning("stream refused",
                        extra=fields(call=self.uuid, close_code=exc.close_code, reason=exc.reason))
            await self.close(exc.close_code, exc.reason)
        except asyncio.CancelledError:
            self.outcome = self.outcome or "shutdown"
            await self.close(wire.CLOSE_GOING_AWAY, "gateway shutting down")
            raise
        except Exception as exc:  # a bug must end this call only
            self.outcome = "error"
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("call failed", extra=fields(call=self.uuid))
            await self.close(wire.CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self.state = "ended"
            self.ended = self._clock()
            for task in list(self._tasks):
                task.cancel()
            if self._model is not None:
                await self._model.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            m.ACTIVE_CALLS.dec()
            self.outcome = self.outcome or "completed"
            m.CALLS.labels(outcome=self.outcome).inc()
            log.info(
                "call ended",
                extra=fields(call=self.uuid, outcome=self.outcome,
                             duration_s=round(self.ended - self.started, 3), frames_in=self.stats.frames_in,
                             frames_out=self.stats.frames_out,
                             barge_ins=self.stats.barge_ins, underruns=self.playout.stats.underruns),
            )

    async def _run(self) -> None:
        early: list[bytes] = []
        await self._read_metadata(early)
        self.profile = self.profiles.select(self.meta.profile, self.meta.callee)
        if self._control_plane is not None:
            try:
                self.control = self._control_plane.for_call(self.uuid, self.meta.worker or None,
                                                            on_dtmf=self._on_dtmf)
            except Exception as exc:
                log.warning("call control unavailable", extra=fields(call=self.uuid, error=str(exc)))
        if self._playback_mode() == "file":
            # Upstream module: each message becomes a temp file played with uuid_broadcast. 20 ms files
            # would mean 50 broadcasts a second; larger chunks keep FreeSWITCH's work sane, and barge-in
            # still stops at once through uuid_break (flush_playback).
            chunk = self.settings.file_chunk_ms
            self.playout = PlayoutClock(self._clock, lead_ms=max(self.settings.playout_lead_ms, 2 * chunk),
                                        frame_ms=chunk)
        if self.rate == 16000:
            self._up = StreamResampler(16000, rt.MODEL_PCM_RATE)
            self._down = StreamResampler(rt.MODEL_PCM_RATE, 16000)
        log.info(
            "call started",
            extra=fields(call=self.uuid, rate=self.rate, profile=self.profile.name, worker=self.meta.worker,
                         call_id=self.meta.call_id, caller=pii(self.meta.caller),
                         callee=pii(self.meta.callee)),
        )
        self.state = "active"
        self._frame_len = wire.frame_bytes(self.rate, int(self.playout.frame_ms))
        self._model = self._make_model()
        self._spawn(self._model.run(self._setup_events()), "model")
        self._spawn(self._playback(), "playback")
        for frame in early:
            self._on_caller_audio(frame)
        await self._receive()

    async def _read_metadata(self, early: list[bytes]) -> None:
        """The module sends metadata first, but a binary frame may race it (research §1.5): accept the
        metadata as long as it comes within the first few frames, and keep those frames."""
        deadline = self._clock() + self.settings.metadata_timeout_s
        while len(early) < 3:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            try:
                msg = await self.ws.receive(timeout=remaining)
            except TimeoutError:
                break
            if msg.type == WSMsgType.TEXT:
                self.meta = wire.parse_metadata(msg.data)
                break
            if msg.type == WSMsgType.BINARY:
                wire.check_audio_frame(msg.data, self.rate)
                early.append(msg.data)
                continue
            self._raise_for_message(msg)
        rate = self.meta.rate or (wire.parse_rate(self._query["rate"]) if "rate" in self._query else None)
        self.rate = rate or self.settings.default_rate
        for frame in early:
            wire.check_audio_frame(frame, self.rate)

    def _raise_for_message(self, msg: Any) -> None:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise _StreamEnded()
        if msg.type == WSMsgType.ERROR:
            exc = self.ws.exception()
            code = getattr(exc, "code", wire.CLOSE_PROTOCOL_ERROR)
            raise wire.StreamProtocolError(int(code) if isinstance(code, int) else wire.CLOSE_PROTOCOL_ERROR,
                                           f"bad frame: {exc}")
        raise wire.StreamProtocolError(wire.CLOSE_UNSUPPORTED_DATA, f"unexpected message type {msg.type!r}")

    async def _receive(self) -> None:
        ws = self.ws
        try:
            while not self._closed.is_set():
                msg = await ws.receive()
                if msg.type == WSMsgType.BINARY:
                    wire.check_audio_frame(msg.data, self.rate)
                    self._in_receive = True
                    try:
                        if self.stats.frames_in & 7:
                            self._on_caller_audio(msg.data)
                        else:  # one frame in eight is timed: the histogram costs a lock per observe
                            t0 = time.perf_counter()
                            self._on_caller_audio(msg.data)
                            m.FRAME_WORK.observe(time.perf_counter() - t0)
                    finally:
                        self._in_receive = False
                    if self._out:
                        await self._pump()
                        if self._out:  # more than the lead arrived at once (a burst): let the timer pace it
                            self._out_ready.set()
                elif msg.type == WSMsgType.TEXT:
                    # `uuid_audio_stream stop <text>` sends one final text frame; anything else is logged.
                    log.info("stream text", extra=fields(call=self.uuid, text=pii(msg.data[:200])))
                else:
                    self._raise_for_message(msg)
        except _StreamEnded:
            pass
        if self.outcome is None:
            self.outcome = "caller_hangup" if not self._ending else "completed"

    # ------------------------------------------------------------------ caller -> model
    def _on_caller_audio(self, pcm: bytes) -> None:
        self.stats.frames_in += 1
        self.stats.bytes_in += len(pcm)
        if self.state != "active" or self._model is None or not pcm:
            return
        if self.rate == 8000:
            payload = g711.pcm16_to_ulaw(pcm)
        else:
            assert self._up is not None
            payload = self._up.process_bytes(pcm)
        self._model.append_audio(payload)

    # ------------------------------------------------------------------ model -> caller
    def _make_model(self) -> ModelLink:
        s = self.settings
        if s.model_backend.startswith("null"):
            silence = g711.ULAW_SILENCE if self.rate == 8000 else 0
            return NullLink(mode=s.model_backend.removeprefix("null-"), audio_sink=self.model_audio,
                            silence_byte=silence)
        assert self.profile is not None
        pending_frames = max(1, s.max_pending_input_ms // FRAME_MS)
        return RealtimeLink(
            call_uuid=self.uuid, base_url=s.model_url, api_key=s.api_key(), model=s.model_name,
            profile=self.profile.name, dispatch=self.dispatch, on_failure=self._on_model_failure,
            connect_timeout=s.model_connect_timeout_s, max_pending_audio=pending_frames,
        )

    def _setup_events(self) -> list[dict[str, Any]]:
        p = self.profile
        assert p is not None
        events = [
            rt.session_update(rate=self.rate, instructions=p.instructions, voice=p.voice,
                              turn_detection=p.turn_detection.model_dump(), tools=p.tools)
        ]
        if p.greeting:
            events.append(rt.greeting_response(p.greeting))
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
        self._response_active = True
        self._response_id = (event.get("response") or {}).get("id")

    def _on_response_done(self, event: dict[str, Any]) -> None:
        resp = event.get("response") or {}
        if resp.get("id") in (None, self._response_id):
            self._response_active = False
        self._out_ready.set()  # flush a partial last frame

    def _on_audio_delta(self, event: dict[str, Any]) -> None:
        self.model_audio(event.get("item_id"), event.get("response_id"), base64.b64decode(event["delta"]))

    def model_audio(self, item_id: str | None, response_id: str | None, payload: bytes) -> None:
        """Agent audio in the session's model format (mu-law 8 kHz or PCM16 24 kHz)."""
        if self.state != "active":
            return
        if response_id in self._dropped_responses or item_id in self._dropped_items:
            return  # audio of a reply the caller interrupted, still in flight from the model
        if self.rate == 8000:
            pcm = g711.ulaw_to_pcm16(payload)
        else:
            assert self._down is not None
            pcm = self._down.process_bytes(payload[: len(payload) & ~1])
        if item_id is not None:
            self._generated_ms[item_id] = self._generated_ms.get(item_id, 0.0) + rt.audio_ms(len(payload),
                                                                                               self.rate)
        self._enqueue(item_id, pcm)

    def _enqueue(self, item_id: str | None, pcm: bytes) -> None:
        if self._out and self._out[-1].item_id == item_id:
            self._out[-1].pcm += pcm
        else:
            self._out.append(_Segment(item_id, bytearray(pcm)))
        if not self._in_receive:
            self._out_ready.set()

    def _on_agent_transcript(self, event: dict[str, Any]) -> None:
        text = str(event.get("transcript", ""))
        self.transcript.append({"role": "agent", "text": text})
        log.info("agent said", extra=fields(call=self.uuid, transcript=pii(text)))
        self._forward({"type": "transcript", "role": "agent", "text": text})

    def _on_caller_transcript(self, event: dict[str, Any]) -> None:
        text = str(event.get("transcript", ""))
        self.transcript.append({"role": "caller", "text": text})
        log.info("caller said", extra=fields(call=self.uuid, transcript=pii(text)))
        self._forward({"type": "transcript", "role": "caller", "text": text})

    def _forward(self, doc: dict[str, Any]) -> None:
        """Non-audio text reaches FreeSWITCH as a mod_audio_stream::json event (visible on ESL)."""
        if self.settings.log_redact_pii or self.ws.closed:
            return
        self._spawn(self.ws.send_str(json.dumps(doc)), "forward")

    def _on_speech_stopped(self, event: dict[str, Any]) -> None:
        self._speech_stopped_at = self._clock()

    def _on_speech_started(self, event: dict[str, Any]) -> None:
        """Barge-in: stop agent audio at once; cancel and truncate so the model knows what was heard."""
        self._speech_stopped_at = None
        playing = bool(self._out) or self.playout.queued_ms() > 0 or self._response_active
        if not playing or self._model is None:
            return
        item_id = self.playout.item_id
        queued_items = [seg.item_id for seg in self._out if seg.item_id]
        self._out.clear()  # control jumps the queue: nothing more goes to FreeSWITCH from this reply
        heard = self.playout.interrupt()
        if self._response_active:
            self._model.send(rt.response_cancel())
            if self._response_id:
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
        if self._down is not None:  # no filter memory of the interrupted reply in the next one
            self._down = StreamResampler(rt.MODEL_PCM_RATE, 16000)
        self.stats.barge_ins += 1
        m.BARGE_INS.inc()
        log.info("barge-in", extra=fields(call=self.uuid, item=item_id, heard_ms=heard))
        if self.control is not None and self._playback_mode() == "file":
            self._spawn(self.control.flush_playback(), "flush")

    def _playback_mode(self) -> str:
        mode = getattr(self.control, "playback_mode", None)
        return mode or self.settings.playback_mode.get(self.meta.worker, "stream")

    def _on_function_call(self, event: dict[str, Any]) -> None:
        self._spawn(self._tool(event), "tool")

    async def _tool(self, event: dict[str, Any]) -> None:
        assert self.profile is not None and self._model is not None
        name = str(event.get("name", ""))
        summary = " / ".join(f"{t['role']}: {t['text']}" for t in self.transcript[-6:])
        result = await run_tool(name, str(event.get("arguments", "{}")), control=self.control,
                                profile=self.profile, call_uuid=self.uuid, summary=summary)
        m.TOOL_CALLS.labels(tool=name if name in rt.TOOL_SCHEMAS else "unknown",
                            result="ok" if result.output.get("ok") else "error").inc()
        log.info("tool call", extra=fields(call=self.uuid, tool=name, ok=bool(result.output.get("ok")),
                                           error=result.output.get("error")))
        call_id = event.get("call_id")
        if call_id and self._model is not None and self.state == "active":
            self._model.send(rt.function_call_output(str(call_id), result.output))
            if result.speak:
                self._model.send(rt.response_create())
        if result.end_call:
            self._ending = True
            self._spawn(self._finish_after_playback("end_call"), "end")

    def _on_error(self, event: dict[str, Any]) -> None:
        err = event.get("error") or {}
        self.stats.model_errors += 1
        if isinstance(err, dict):
            detail = f"{err.get('type')}/{err.get('code')}: {err.get('message')}"
        else:
            detail = str(err)
        if rt.is_fatal_error(event):
            self._on_model_failure("error_event", detail)
        else:
            m.MODEL_ERRORS.labels(kind="request").inc()
            log.info("model refused a request", extra=fields(call=self.uuid, error=detail))

    def _on_dtmf(self, digit: str) -> None:
        if self._model is not None and self.state == "active":
            log.info("dtmf", extra=fields(call=self.uuid, digit=pii(digit)))
            self._model.send(rt.user_text_item(f"[The caller pressed DTMF key {digit}]"))

    # ------------------------------------------------------------------ failure path
    def _on_model_failure(self, kind: str, detail: str) -> None:
        if self.state != "active" or self._ending:
            return
        self.state = "fallback"
        self.last_error = f"model {kind}: {detail}"
        self.stats.model_errors += 1
        m.MODEL_ERRORS.labels(kind=kind).inc()
        m.FALLBACKS.inc()
        log.error("model failed, playing fallback", extra=fields(call=self.uuid, kind=kind, error=detail))
        self._out.clear()
        self.playout.interrupt()
        assert self.profile is not None
        self._response_active = False
        if self._model is not None:  # no more model audio or events for this call
            self._spawn(self._model.close(), "model-close")
        self._enqueue("fallback", self._fallback_audio(self.profile.name, self.rate))
        self._spawn(self._finish_after_playback("fallback"), "fallback")

    async def _finish_after_playback(self, why: str) -> None:
        assert self.profile is not None
        # Polled at frame rate: three conditions owned by different handlers; one wake-up per 20 ms is free.
        # Bounded: a model that never finishes its response must not keep the call open forever.
        deadline = self._clock() + FINISH_TIMEOUT_S
        while (self._out or self._response_active or self.playout.queued_ms() > 0) and \
                self._clock() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(FRAME_MS / 1000.0)
        if why == "fallback":
            self.outcome = "fallback"
            fb = self.profile.fallback
            target = self.profile.resolve_target(fb.target) if fb.target else None
            if fb.action == "transfer" and self.control is not None and target:
                try:
                    await self.control.transfer(target)
                    log.info("fallback transfer", extra=fields(call=self.uuid, target=fb.target))
                    await self.close(wire.CLOSE_NORMAL, "transferred")
                    return
                except Exception as exc:
                    log.warning("fallback transfer failed", extra=fields(call=self.uuid, error=str(exc)))
            await self.hangup("model failure")
        else:
            self.outcome = "completed"
            await self.hangup(why)

    # ------------------------------------------------------------------ paced playback
    # Two things drive playback: the caller's own frames (FreeSWITCH sends one every 20 ms, so the receive
    # loop pumps right after each), and this task's timer for when they do not (stream paused, a burst of
    # model audio to pace out). In the steady state the receive loop does the work and this task sleeps,
    # which saves a task wake-up per frame per call.
    async def _playback(self) -> None:
        while True:
            if not self._out:
                self._out_ready.clear()
                await self._out_ready.wait()
                continue
            await self._pump()
            if not self._out:
                continue
            wait = self.playout.seconds_until_room()
            if wait > 0:
                await asyncio.sleep(wait)
            else:  # half a frame while the model is still talking: wait for the rest rather than chop
                self._out_ready.clear()
                await self._out_ready.wait()

    async def _pump(self) -> None:
        """Send queued agent audio, one 20 ms message at a time, while it fits under the lead."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._out and self.playout.wants_frame():
                if not await self._send_frame():
                    return
        finally:
            self._pumping = False

    async def _send_frame(self) -> bool:
        seg = self._out[0]
        frame_len = self._frame_len
        if len(seg.pcm) < frame_len and len(self._out) == 1 and seg.item_id != "fallback" and \
                self._response_active:
            return False
        frame = bytes(seg.pcm[:frame_len])
        del seg.pcm[:frame_len]
        if not seg.pcm:
            self._out.popleft()
        first = seg.item_id != self.playout.item_id or self.playout.item_id is None
        if first:
            self.playout.begin_item(seg.item_id)
        if self.ws.closed:
            self._out.clear()
            return False
        try:
            await self.ws.send_str(wire.build_stream_audio(frame, self.rate))
        except ConnectionResetError:  # the module dropped TCP: the receive loop ends the call
            self._out.clear()
            return False
        if self.playout.on_sent(len(frame) * 1000.0 / (2 * self.rate), continuing=not first):
            m.UNDERRUNS.inc()
        if first and self._speech_stopped_at is not None:
            latency = self._clock() - self._speech_stopped_at
            self._speech_stopped_at = None
            m.REPLY_LATENCY.observe(latency)
            self.stats.last_reply_latency_ms = round(latency * 1000.0, 1)
            self.stats.reply_latencies_ms.append(self.stats.last_reply_latency_ms)
        self.stats.frames_out += 1
        self.stats.bytes_out += len(frame)
        return True

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
                loop.create_task(self.close(wire.CLOSE_INTERNAL_ERROR, "internal error"))


class _StreamEnded(Exception):
    """The module closed the stream (close frame or TCP EOF)."""


def _reason_label(code: int) -> str:
    return {
        wire.CLOSE_TOO_BIG: "too_big",
        wire.CLOSE_INVALID_PAYLOAD: "invalid_payload",
        wire.CLOSE_UNSUPPORTED_DATA: "unsupported_data",
        wire.CLOSE_PROTOCOL_ERROR: "protocol_error",
        wire.CLOSE_POLICY_VIOLATION: "policy",
    }.get(code, "other")
