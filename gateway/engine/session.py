"""The Realtime session state machine, sans-I/O.

`RealtimeSession` takes client events (raw WebSocket text) and an injected clock value, and returns the
server events to send, as plain dicts in the GA shape of the official SDK (`openai.types.realtime`).
It owns one call's state: session settings, the input buffer and its VAD, the conversation, and at
most one response in flight. The only time-dependent behaviour is pacing of output audio: `poll(now)`
releases the audio chunks that are due and `next_deadline()` says when to call it again. Identifiers
are per-session counters, so the same input gives the same output, byte for byte.

Client events are validated with the SDK's own client-event models before anything else, so a field
of the wrong type or an unsupported audio format is refused exactly where the real API would refuse
it; every refusal is an `error` event naming the offending client `event_id`, and the session lives on.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from . import audio
from .asr import RATE as ASR_RATE
from .asr import PhraseRecognizer
from .dialogue import DialogueEngine, Plan, say_exactly
from .profiles import EngineProfile
from .tts import EspeakSynth, Speech
from .vad import FRAME_MS, TurnDetector

log = logging.getLogger("gateway.engine.session")

MAX_BUFFER_MS = 120_000  # uncommitted input audio kept at most (a caller monologue, 2 minutes)
MIN_COMMIT_MS = 100  # the real API refuses to commit less than this
MAX_ITEMS = 2_000  # conversation items kept; the oldest go first on very long calls
MAX_PREFIX_MS = 2_000  # prefix padding honoured at most (it sets how much idle audio a session keeps)


def _client_event_models() -> dict[str, type[BaseModel]]:
    from typing import get_args

    from openai.types.realtime.realtime_client_event import RealtimeClientEvent

    union = get_args(RealtimeClientEvent)[0]
    models: dict[str, type[BaseModel]] = {}
    for cls in get_args(union):
        (literal,) = get_args(cls.model_fields["type"].annotation)
        models[literal] = cls
    return models


CLIENT_EVENT_MODELS = _client_event_models()

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
# semantic_vad has no silence setting; its eagerness picks one (high answers soonest).
_EAGERNESS_SILENCE_MS = {"high": 300, "medium": 500, "auto": 500, "low": 900}


class ClientError(Exception):
    """A client event the session refuses; becomes an `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class Engines:
    """The process-wide speech parts shared by all sessions (loaded once, before listening)."""

    synth: EspeakSynth
    recognizers: dict[str, PhraseRecognizer]


@dataclass
class _AudioItem:
    """An assistant message being spoken: its audio in wire chunks and the transcript in step."""

    item: dict[str, Any]
    output_index: int
    text: str
    speech: Speech | None
    chunks: list[bytes]
    chunk_ms: int
    out_rate: int
    sent: int = 0  # chunks sent
    sent_bytes: int = 0
    sent_text: str = ""
    done: bool = False

    @property
    def sent_ms(self) -> int:
        return self.sent_bytes * 1000 // (self.out_rate * self._width)

    @property
    def _width(self) -> int:
        return 1 if self.out_rate == 8000 else 2

    def heard_text(self, ms: int | None = None) -> str:
        """The transcript of the audio sent so far (or up to `ms`)."""
        if self.speech is None:
            return self.text
        ms = self.sent_ms if ms is None else ms
        total_ms = len(self.speech.pcm) * 1000 // self.speech.rate
        if ms >= total_ms:
            return self.text
        return self.speech.text_until(self.text, ms * self.speech.rate // 1000)


@dataclass
class _Response:
    id: str
    started: float
    conversation: bool
    modalities: list[str]
    out_format: dict[str, Any]
    voice: Any
    metadata: Any
    plan: Plan
    output: list[dict[str, Any]] = field(default_factory=list)
    speaking: _AudioItem | None = None
    pending_tool: bool = False


@dataclass
class _ItemMeta:
    """Engine-side facts about a conversation item that the wire item does not carry."""

    generated_ms: int | None = None  # assistant audio actually produced (the truncate limit)
    speech: _AudioItem | None = None
    intent: str | None = None  # for function calls: the intent that made them


class RealtimeSession:
    def __init__(
        self,
        profile: EngineProfile,
        engines: Engines,
        *,
        model: str = "gpt-realtime",
        session_id: str = "sess_local",
        chunk_ms: int = 100,
        pace: float = 1.0,
        lead_ms: int = 300,
    ) -> None:
        self.profile = profile
        self.engines = engines
        self.dialogue = DialogueEngine(profile)
        self.session_id = session_id
        self.chunk_ms = chunk_ms
        self.pace = pace
        self.lead_ms = lead_ms
        self._seq = {"event": 0, "item": 0, "resp": 0, "call": 0}
        self.config: dict[str, Any] = {
            "type": "realtime",
            "model": model,
            "instructions": "",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(DEFAULT_TURN_DETECTION),
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "voice": profile.voice or "marin",
                    "speed": 1.0,
                },
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
        }
        self.items: list[dict[str, Any]] = []
        self._meta: dict[str, _ItemMeta] = {}
        self._answered = 0  # items before this index have been responded to
        self.response: _Response | None = None
        # input side
        self._pending = np.zeros(0, np.int16)  # native-rate samples not yet a whole 20 ms frame
        self._odd_byte = b""
        self._frames: list[np.ndarray] = []  # native-rate 20 ms frames of the uncommitted buffer
        self._buffer_start_frame = 0  # session frame index of _frames[0]
        self._turn_item: str | None = None
        self._turn_start_ms = 0
        self._vad = self._new_vad()

    # ------------------------------------------------------------------ helpers
    def _id(self, kind: str) -> str:
        self._seq[kind] += 1
        return f"{kind}_{self._seq[kind]:05d}"

    def _ev(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": self._id("event"), **fields}

    def _error(
        self,
        code: str,
        message: str,
        param: str | None,
        client_event_id: str | None,
        type_: str = "invalid_request_error",
    ) -> dict[str, Any]:
        return self._ev(
            "error",
            error={
                "type": type_,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        )

    @property
    def in_format(self) -> str:
        return self.config["audio"]["input"]["format"]["type"]

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]

    def _new_vad(self) -> TurnDetector:
        td = self.turn_detection or DEFAULT_TURN_DETECTION
        silence = td.get("silence_duration_ms")
        if td.get("type") == "semantic_vad":
            silence = _EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 500)
        vad = TurnDetector(threshold=td.get("threshold") or 0.5, silence_duration_ms=silence or 500)
        if getattr(self, "_vad", None) is not None:
            vad.frames = self._vad.frames  # the session's audio clock never goes back
        return vad

    @staticmethod
    def _prefix_ms(td: dict[str, Any]) -> int:
        return max(0, min(MAX_PREFIX_MS, int(td.get("prefix_padding_ms") or 0)))

    @property
    def _frame_samples(self) -> int:
        return audio.FORMATS[self.in_format][0] * FRAME_MS // 1000

    def _allowed_tools(self, tools: list[dict[str, Any]], choice: Any) -> set[str]:
        names = {
            t.get("name") for t in tools if isinstance(t, dict) and t.get("type", "function") == "function"
        }
        names.discard(None)
        if choice == "none":
            return set()
        if isinstance(choice, dict) and choice.get("type") == "function":
            return names & {choice.get("name")}
        return names  # "auto" / "required"

    def _add_item(self, item: dict[str, Any], meta: _ItemMeta | None = None) -> str | None:
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        self._meta[item["id"]] = meta or _ItemMeta()
        if len(self.items) > MAX_ITEMS:
            dropped = self.items.pop(0)
            self._meta.pop(dropped["id"], None)
            self._answered = max(0, self._answered - 1)
        return previous

    def _find(self, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self.items if i["id"] == item_id), None)

    # ------------------------------------------------------------------ entry points
    def open(self, now: float = 0.0) -> list[dict[str, Any]]:
        return [self._ev("session.created", session=copy.deepcopy(self.config))]

    def receive(self, raw: str | bytes, now: float) -> list[dict[str, Any]]:
        """One WebSocket message from the client -> the server events it causes (plus due audio)."""
        if isinstance(raw, bytes):
            return [
                self._error(
                    "invalid_message",
                    "binary frames are not part of the Realtime protocol; send JSON text frames",
                    None,
                    None,
                )
            ]
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return [self._error("invalid_json", f"the message is not valid JSON: {exc}", None, None)]
        if not isinstance(data, dict):
            return [self._error("invalid_json", "a client event must be a JSON object", None, None)]
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        etype = data.get("type")
        model = CLIENT_EVENT_MODELS.get(etype) if isinstance(etype, str) else None
        handler = self._handlers.get(etype) if isinstance(etype, str) else None
        if model is None or handler is None:
            return [
                self._error("invalid_event_type", f"unknown client event type {etype!r}", "type", event_id)
            ]
        try:
            model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            return [
                self._error("invalid_value", f"invalid {etype}: {first['msg']} at {param}", param, event_id)
            ]
        try:
            out = handler(self, data, now)
        except ClientError as exc:
            out = [self._error(exc.code, exc.message, exc.param, event_id)]
        except Exception:  # a bug must cost this one event, not the call: report it and carry on
            log.exception("event failed", extra={"fields": {"session": self.session_id, "type": etype}})
            out = [
                self._error(
                    "internal_error",
                    f"the engine failed to handle {etype}",
                    None,
                    event_id,
                    type_="server_error",
                )
            ]
        return out + self.poll(now)

    def next_deadline(self) -> float | None:
        r = self.response
        if r is None or r.speaking is None or r.speaking.done:
            return None
        return self._due(r, r.speaking.sent)

    def poll(self, now: float) -> list[dict[str, Any]]:
        """Release the output audio that is due at `now`; finish the response when all of it is out."""
        out: list[dict[str, Any]] = []
        r = self.response
        while r is not None and r.speaking is not None and not r.speaking.done:
            sp = r.speaking
            if sp.sent >= len(sp.chunks):
                out += self._finish_audio(r, "completed")
                out += self._continue(r, now)
                r = self.response
                continue
            if self._due(r, sp.sent) > now:
                break
            chunk = sp.chunks[sp.sent]
            sp.sent += 1
            sp.sent_bytes += len(chunk)
            base = {
                "response_id": r.id,
                "item_id": sp.item["id"],
                "output_index": sp.output_index,
                "content_index": 0,
            }
            heard = sp.heard_text()
            if len(heard) > len(sp.sent_text):
                out.append(
                    self._ev(
                        "response.output_audio_transcript.delta", **base, delta=heard[len(sp.sent_text) :]
                    )
                )
                sp.sent_text = heard
            out.append(
                self._ev("response.output_audio.delta", **base, delta=base64.b64encode(chunk).decode())
            )
            meta = self._meta.get(sp.item["id"])  # absent for an out-of-band response or a deleted item
            if meta is not None:
                meta.generated_ms = sp.sent_ms
        return out

    def _due(self, r: _Response, index: int) -> float:
        if self.pace <= 0:
            return r.started
        return r.started + max(0, index * r.speaking.chunk_ms - self.lead_ms) / 1000.0 / self.pace

    # ------------------------------------------------------------------ client events
    def _on_session_update(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        s = data.get("session") or {}
        cfg = copy.deepcopy(self.config)
        for key in ("instructions", "tools", "tool_choice", "max_output_tokens"):
            if key in s and s[key] is not None:
                cfg[key] = s[key]
        if s.get("output_modalities") is not None:
            mods = s["output_modalities"]
            if len(mods) != 1:
                raise ClientError(
                    "invalid_value",
                    'output_modalities must be ["audio"] or ["text"]',
                    "session.output_modalities",
                )
            cfg["output_modalities"] = list(mods)
        a = s.get("audio") or {}
        ain, aout = a.get("input") or {}, a.get("output") or {}
        for target, src, name in (
            (cfg["audio"]["input"], ain, "input"),
            (cfg["audio"]["output"], aout, "output"),
        ):
            fmt = src.get("format")
            if fmt is not None:
                ftype = fmt.get("type") or "audio/pcm"
                if ftype not in audio.FORMATS:
                    raise ClientError(
                        "invalid_value",
                        f"unsupported audio format {ftype!r}",
                        f"session.audio.{name}.format.type",
                    )
                target["format"] = (
                    {"type": "audio/pcm", "rate": 24000} if ftype == "audio/pcm" else {"type": ftype}
                )
        if "turn_detection" in ain:
            td = ain["turn_detection"]
            if td is None:
                cfg["audio"]["input"]["turn_detection"] = None
            else:
                merged = (
                    dict(DEFAULT_TURN_DETECTION)
                    if td.get("type") == "server_vad"
                    else {
                        "type": "semantic_vad",
                        "eagerness": "auto",
                        "create_response": True,
                        "interrupt_response": True,
                    }
                )
                merged.update({k: v for k, v in td.items() if v is not None})
                threshold = merged.get("threshold", 0.5)
                if isinstance(threshold, float) and not math.isfinite(threshold):
                    raise ClientError(
                        "invalid_value",
                        "threshold must be a number between 0 and 1",
                        "session.audio.input.turn_detection.threshold",
                    )
                cfg["audio"]["input"]["turn_detection"] = merged
        for key in ("transcription", "noise_reduction"):
            if key in ain:
                cfg["audio"]["input"][key] = ain[key]
        for key in ("voice", "speed"):
            if aout.get(key) is not None:
                cfg["audio"]["output"][key] = aout[key]
        format_changed = cfg["audio"]["input"]["format"] != self.config["audio"]["input"]["format"]
        vad_changed = (
            cfg["audio"]["input"]["turn_detection"] != self.config["audio"]["input"]["turn_detection"]
        )
        self.config = cfg
        if format_changed:
            # Samples of the old format cannot be mixed with the new one: drop what was not committed.
            self._clear_input()
        if format_changed or vad_changed:
            self._vad = self._new_vad()
        return [self._ev("session.updated", session=copy.deepcopy(self.config))]

    def _on_append(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        try:
            raw = base64.b64decode(data["audio"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientError("invalid_base64", f"audio is not valid base64: {exc}", "audio") from exc
        if self.in_format == "audio/pcm":
            raw = self._odd_byte + raw
            self._odd_byte = raw[len(raw) // 2 * 2 :]
        samples = audio.decode(self.in_format, raw)
        self._pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        out: list[dict[str, Any]] = []
        n = self._frame_samples
        while len(self._pending) >= n:
            frame, self._pending = self._pending[:n], self._pending[n:]
            out += self._on_frame(frame, now)
        return out

    def _on_frame(self, frame: np.ndarray, now: float) -> list[dict[str, Any]]:
        self._frames.append(frame)
        td = self.turn_detection
        if td is None:
            limit = MAX_BUFFER_MS // FRAME_MS
            if len(self._frames) > limit:
                del self._frames[: len(self._frames) - limit]
                self._buffer_start_frame = self._vad.frames + 1 - len(self._frames)
            self._vad.frames += 1
            return []
        vad_frame = frame if len(frame) == 160 else frame.reshape(-1, 3).mean(axis=1).astype(np.int16)
        ev = self._vad.frame(vad_frame)
        out: list[dict[str, Any]] = []
        if ev is None and not self._vad.in_speech:
            # Keep only what prefix padding (plus the onset window) can reach back to.
            keep = self._prefix_ms(td) // FRAME_MS + 8
            if len(self._frames) > keep:
                del self._frames[: len(self._frames) - keep]
            self._buffer_start_frame = self._vad.frames - len(self._frames)
        elif ev is not None and ev.kind == "start":
            start_ms = max(0, ev.ms - self._prefix_ms(td), self._buffer_start_frame * FRAME_MS)
            self._turn_start_ms = start_ms
            self._turn_item = self._id("item")
            out.append(
                self._ev(
                    "input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=self._turn_item
                )
            )
            if self.response is not None and td.get("interrupt_response", True):
                out += self._cancel(self.response, "turn_detected", now)
        elif ev is not None and ev.kind == "stop":
            item_id = self._turn_item or self._id("item")
            out.append(self._ev("input_audio_buffer.speech_stopped", audio_end_ms=ev.ms, item_id=item_id))
            first = self._turn_start_ms // FRAME_MS - self._buffer_start_frame
            out += self._commit(item_id, max(0, first), now, auto=True)
        elif self._vad.in_speech and len(self._frames) * FRAME_MS > MAX_BUFFER_MS:
            # A turn longer than the buffer: end it here rather than grow without bound.
            item_id = self._turn_item or self._id("item")
            self._vad.reset()
            out.append(
                self._ev(
                    "input_audio_buffer.speech_stopped",
                    audio_end_ms=self._vad.frames * FRAME_MS,
                    item_id=item_id,
                )
            )
            out += self._commit(item_id, 0, now, auto=True)
        return out

    def _clear_input(self) -> None:
        self._frames, self._pending, self._odd_byte = [], np.zeros(0, np.int16), b""
        self._buffer_start_frame = self._vad.frames
        self._turn_item = None
        self._vad.reset()

    def _commit(self, item_id: str, first_frame: int, now: float, auto: bool) -> list[dict[str, Any]]:
        frames = self._frames[first_frame:]
        pcm = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        self._frames = []
        self._buffer_start_frame = self._vad.frames
        self._turn_item = None
        rate = audio.FORMATS[self.in_format][0]
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "object": "realtime.item",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self._add_item(item)
        out = [
            self._ev("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous),
            self._ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous),
            self._ev("conversation.item.done", item=copy.deepcopy(item), previous_item_id=previous),
        ]
        recognizer = self.engines.recognizers.get(self.profile.name)
        cpu0 = time.process_time()  # for the log only: never feeds back into the events
        pcm16k = audio.resample(pcm, rate, ASR_RATE)
        result = recognizer.recognise(pcm16k) if recognizer is not None else None
        asr_cpu_ms = round((time.process_time() - cpu0) * 1000, 1)
        transcript = result.transcript if result is not None else ""
        item["content"][0]["transcript"] = transcript
        log.info(
            "caller turn",
            extra={
                "fields": {
                    "session": self.session_id,
                    "item": item_id,
                    "audio_ms": len(pcm) * 1000 // rate,
                    "phone_distance": round(result.distance, 3) if result else None,
                    "asr_cpu_ms": asr_cpu_ms,
                    "pii": {"transcript": transcript},
                }
            },
        )
        out.append(
            self._ev(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(len(pcm) / rate, 3)},
            )
        )
        td = self.turn_detection
        if auto and td is not None and td.get("create_response", True) and self.response is None:
            out += self._start_response({}, now)
        return out

    def _on_commit(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        frames_ms = len(self._frames) * FRAME_MS
        if frames_ms < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {MIN_COMMIT_MS} ms, have {frames_ms} ms",
                None,
            )
        item_id = self._turn_item or self._id("item")
        self._vad.reset()
        return self._commit(item_id, 0, now, auto=False)

    def _on_clear(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        self._clear_input()
        return [self._ev("input_audio_buffer.cleared")]

    def _on_item_create(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        item = copy.deepcopy(data["item"])
        itype = item.get("type")
        if itype == "message" and item.get("role") == "assistant":
            for part in item.get("content") or []:
                if part.get("type") == "output_audio" and part.get("audio"):
                    raise ClientError(
                        "invalid_value", "assistant audio messages cannot be created", "item.content"
                    )
        if itype not in ("message", "function_call_output", "function_call"):
            raise ClientError("invalid_value", f"unsupported item type {itype!r}", "item.type")
        if itype == "function_call_output":
            calls = {i.get("call_id") for i in self.items if i.get("type") == "function_call"}
            if item.get("call_id") not in calls:
                raise ClientError(
                    "invalid_value", f"no function call with call_id {item.get('call_id')!r}", "item.call_id"
                )
        item_id = item.get("id") or self._id("item")
        if self._find(item_id) is not None:
            raise ClientError("item_already_exists", f"an item with id {item_id!r} already exists", "item.id")
        item["id"] = item_id
        item["object"] = "realtime.item"
        item.setdefault("status", "completed")
        if itype == "message":
            for part in item.get("content") or []:
                if part.get("type") == "input_audio" and part.get("audio"):
                    pcm = audio.decode(self.in_format, self._b64(part.pop("audio"), "item.content.audio"))
                    recognizer = self.engines.recognizers.get(self.profile.name)
                    rate = audio.FORMATS[self.in_format][0]
                    part["transcript"] = (
                        recognizer.recognise(audio.resample(pcm, rate, ASR_RATE)).transcript
                        if recognizer
                        else ""
                    )
        previous = self._add_item(item)
        return [
            self._ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous),
            self._ev("conversation.item.done", item=copy.deepcopy(item), previous_item_id=previous),
        ]

    @staticmethod
    def _b64(value: str, param: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientError("invalid_base64", f"{param} is not valid base64: {exc}", param) from exc

    def _on_item_truncate(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        item = self._find(data["item_id"])
        if item is None:
            raise ClientError("item_not_found", f"no item with id {data['item_id']!r}", "item_id")
        meta = self._meta[item["id"]]
        if item.get("role") != "assistant" or meta.speech is None or meta.generated_ms is None:
            raise ClientError(
                "invalid_value", "only assistant messages with audio can be truncated", "item_id"
            )
        if data["content_index"] != 0:
            raise ClientError("invalid_value", "content_index must be 0", "content_index")
        end_ms = data["audio_end_ms"]
        if end_ms < 0 or end_ms > meta.generated_ms:
            raise ClientError(
                "invalid_value",
                f"audio_end_ms {end_ms} is past the {meta.generated_ms} ms of audio generated for this item",
                "audio_end_ms",
            )
        heard = meta.speech.heard_text(end_ms)
        for part in item.get("content") or []:
            if "transcript" in part:
                part["transcript"] = heard
        meta.generated_ms = end_ms
        return [
            self._ev("conversation.item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end_ms)
        ]

    def _on_item_delete(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        item = self._find(data["item_id"])
        if item is None:
            raise ClientError("item_not_found", f"no item with id {data['item_id']!r}", "item_id")
        index = self.items.index(item)
        self.items.pop(index)
        self._meta.pop(item["id"], None)
        if index < self._answered:
            self._answered -= 1
        return [self._ev("conversation.item.deleted", item_id=item["id"])]

    def _on_item_retrieve(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        item = self._find(data["item_id"])
        if item is None:
            raise ClientError("item_not_found", f"no item with id {data['item_id']!r}", "item_id")
        return [self._ev("conversation.item.retrieved", item=copy.deepcopy(item))]

    def _on_response_create(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if self.response is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"response {self.response.id} is still in progress; cancel it first",
                None,
            )
        return self._start_response(data.get("response") or {}, now)

    def _on_response_cancel(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        r = self.response
        wanted = data.get("response_id")
        if r is None or (wanted and wanted != r.id):
            raise ClientError(
                "response_cancel_not_active", "there is no active response to cancel", "response_id"
            )
        return self._cancel(r, "client_cancelled", now)

    def _on_output_clear(self, data: dict[str, Any], now: float) -> list[dict[str, Any]]:
        raise ClientError(
            "invalid_request",
            "output_audio_buffer.clear applies to WebRTC/SIP sessions only; over "
            "WebSocket the client owns playback (send response.cancel and truncate)",
            None,
        )

    _handlers = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "conversation.item.create": _on_item_create,
        "conversation.item.truncate": _on_item_truncate,
        "conversation.item.delete": _on_item_delete,
        "conversation.item.retrieve": _on_item_retrieve,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "output_audio_buffer.clear": _on_output_clear,
    }

    # ------------------------------------------------------------------ responses
    def _plan(self, params: dict[str, Any], tools: set[str]) -> Plan:
        text = say_exactly(params.get("instructions"))
        if text is not None:
            return Plan(reply=text)
        fresh = self.items[self._answered :]
        outputs = [i for i in fresh if i.get("type") == "function_call_output"]
        if outputs:
            out = outputs[-1]
            call = next(
                (
                    i
                    for i in self.items
                    if i.get("type") == "function_call" and i.get("call_id") == out.get("call_id")
                ),
                None,
            )
            intent = self._meta[call["id"]].intent if call is not None else None
            return self.dialogue.after_tool(intent, str(out.get("output", "")))
        users = [i for i in fresh if i.get("type") == "message" and i.get("role") == "user"]
        if users:
            said = " ".join(
                p.get("text") or p.get("transcript") or "" for p in users[-1].get("content") or []
            )
            return self.dialogue.answer(said, tools)
        if not any(i.get("role") == "user" for i in self.items):
            return self.dialogue.opening()
        return Plan(reply=self.dialogue.dialogue.fallback_reply)

    def _start_response(self, params: dict[str, Any], now: float) -> list[dict[str, Any]]:
        tools = self._allowed_tools(
            params.get("tools") if params.get("tools") is not None else self.config["tools"],
            params.get("tool_choice") or self.config["tool_choice"],
        )
        plan = self._plan(params, tools)
        conversation = params.get("conversation", "auto") != "none"
        if conversation:
            self._answered = len(self.items)
        aout = (params.get("audio") or {}).get("output") or {}
        r = _Response(
            id=self._id("resp"),
            started=now,
            conversation=conversation,
            modalities=list(params.get("output_modalities") or self.config["output_modalities"]),
            out_format=aout.get("format") or self.config["audio"]["output"]["format"],
            voice=aout.get("voice") or self.config["audio"]["output"]["voice"],
            metadata=params.get("metadata"),
            plan=plan,
        )
        if r.out_format.get("type") not in audio.FORMATS:
            raise ClientError(
                "invalid_value",
                f"unsupported audio format {r.out_format.get('type')!r}",
                "response.audio.output.format.type",
            )
        self.response = r
        log.info(
            "response",
            extra={
                "fields": {
                    "session": self.session_id,
                    "response": r.id,
                    "intent": plan.intent,
                    "tool": plan.tool.name if plan.tool else None,
                    "pii": {"reply": plan.reply},
                }
            },
        )
        out = [self._ev("response.created", response=self._response_obj(r, "in_progress"))]
        if plan.reply:
            out += self._begin_message(r, plan.reply)
        if r.speaking is None:  # nothing to pace (text only, or no reply): tool call and done now
            out += self._continue(r, now)
        return out

    def _response_obj(
        self,
        r: _Response,
        status: str,
        details: dict[str, Any] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": copy.deepcopy(r.output),
            "conversation_id": "conv_local" if r.conversation else None,
            "output_modalities": r.modalities,
            "max_output_tokens": self.config["max_output_tokens"],
            "audio": {"output": {"format": r.out_format, "voice": r.voice}},
            "metadata": r.metadata,
        }
        if usage is not None:
            obj["usage"] = usage
        return obj

    def _begin_message(self, r: _Response, text: str) -> list[dict[str, Any]]:
        audio_out = "audio" in r.modalities
        item = {
            "id": self._id("item"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "object": "realtime.item",
            "content": [],
        }
        index = len(r.output)
        r.output.append(item)
        out = [
            self._ev(
                "response.output_item.added", response_id=r.id, output_index=index, item=copy.deepcopy(item)
            )
        ]
        meta = _ItemMeta()
        if r.conversation:
            previous = self._add_item(item, meta)
            out.append(
                self._ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous)
            )
        base = {"response_id": r.id, "item_id": item["id"], "output_index": index, "content_index": 0}
        if not audio_out:
            item["content"] = [{"type": "output_text", "text": text}]
            item["status"] = "completed"
            out += [
                self._ev("response.content_part.added", **base, part={"type": "text", "text": ""}),
                self._ev("response.output_text.delta", **base, delta=text),
                self._ev("response.output_text.done", **base, text=text),
                self._ev("response.content_part.done", **base, part={"type": "text", "text": text}),
            ]
            return out + self._item_done(r, index, item)
        fmt = r.out_format["type"]
        out_rate, width = audio.FORMATS[fmt]
        speech = self.engines.synth.synthesize(
            text, speed=float(self.config["audio"]["output"].get("speed") or 1.0)
        )
        wire = audio.encode(fmt, audio.resample(speech.pcm, speech.rate, out_rate))
        step = out_rate * width * self.chunk_ms // 1000
        chunks = [wire[i : i + step] for i in range(0, len(wire), step)]
        r.speaking = _AudioItem(
            item=item,
            output_index=index,
            text=text,
            speech=speech,
            chunks=chunks,
            chunk_ms=self.chunk_ms,
            out_rate=out_rate,
        )
        meta.speech = r.speaking
        meta.generated_ms = 0
        out.append(self._ev("response.content_part.added", **base, part={"type": "audio", "transcript": ""}))
        return out

    def _finish_audio(self, r: _Response, status: str) -> list[dict[str, Any]]:
        sp = r.speaking
        assert sp is not None
        sp.done = True
        sp.chunks = []  # the wire audio is out; keep only what truncate needs (sent_ms, word timing)
        heard = sp.heard_text()
        base = {
            "response_id": r.id,
            "item_id": sp.item["id"],
            "output_index": sp.output_index,
            "content_index": 0,
        }
        out = []
        if len(heard) > len(sp.sent_text):
            out.append(
                self._ev("response.output_audio_transcript.delta", **base, delta=heard[len(sp.sent_text) :])
            )
            sp.sent_text = heard
        sp.item["status"] = status
        sp.item["content"] = [{"type": "output_audio", "transcript": heard}]
        out += [
            self._ev("response.output_audio.done", **base),
            self._ev("response.output_audio_transcript.done", **base, transcript=heard),
            self._ev("response.content_part.done", **base, part={"type": "audio", "transcript": heard}),
        ]
        return out + self._item_done(r, sp.output_index, sp.item)

    def _continue(self, r: _Response, now: float) -> list[dict[str, Any]]:
        """After the spoken part (or instead of it): the tool call, then response.done."""
        out: list[dict[str, Any]] = []
        tool = r.plan.tool
        if tool is not None and not r.pending_tool:
            r.pending_tool = True
            args = json.dumps(tool.arguments, separators=(",", ":"), sort_keys=True)
            item = {
                "id": self._id("item"),
                "type": "function_call",
                "status": "in_progress",
                "object": "realtime.item",
                "name": tool.name,
                "call_id": self._id("call"),
                "arguments": "",
            }
            index = len(r.output)
            r.output.append(item)
            out.append(
                self._ev(
                    "response.output_item.added",
                    response_id=r.id,
                    output_index=index,
                    item=copy.deepcopy(item),
                )
            )
            if r.conversation:
                previous = self._add_item(item, _ItemMeta(intent=r.plan.intent))
                out.append(
                    self._ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous)
                )
            base = {
                "response_id": r.id,
                "item_id": item["id"],
                "output_index": index,
                "call_id": item["call_id"],
            }
            item["arguments"] = args
            item["status"] = "completed"
            out += [
                self._ev("response.function_call_arguments.delta", **base, delta=args),
                self._ev("response.function_call_arguments.done", **base, name=tool.name, arguments=args),
            ]
            out += self._item_done(r, index, item)
        out.append(self._done(r, "completed", None))
        return out

    def _cancel(self, r: _Response, reason: str, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if r.speaking is not None and not r.speaking.done:
            out += self._finish_audio(r, "incomplete")
        # A tool call not yet emitted is dropped: a cancelled "goodbye" must not hang up the call.
        out.append(self._done(r, "cancelled", {"type": "cancelled", "reason": reason}))
        return out

    def _item_done(self, r: _Response, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Close an output item: `response.output_item.done`, and `conversation.item.done` when the
        response writes to the conversation (an out-of-band response does not)."""
        done = copy.deepcopy(item)
        out = [self._ev("response.output_item.done", response_id=r.id, output_index=index, item=done)]
        if r.conversation:
            out.append(self._ev("conversation.item.done", item=copy.deepcopy(item)))
        return out

    def _done(self, r: _Response, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        self.response = None
        for item in r.output:
            if item.get("type") == "message":
                item["content"] = [
                    {k: v for k, v in part.items() if k != "audio"} for part in item["content"]
                ]
        text_tokens = sum(
            len((p.get("transcript") or p.get("text") or "").split())
            for i in r.output
            if i.get("type") == "message"
            for p in i["content"]
        )
        text_tokens += sum(
            len(i.get("arguments", "")) // 4 for i in r.output if i.get("type") == "function_call"
        )
        audio_tokens = (
            sum(
                self._meta[i["id"]].generated_ms or 0
                for i in r.output
                if i.get("type") == "message" and i["id"] in self._meta
            )
            // 50
        )
        usage = {
            "total_tokens": text_tokens + audio_tokens,
            "input_tokens": 0,
            "output_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        return self._ev("response.done", response=self._response_obj(r, status, details, usage))
