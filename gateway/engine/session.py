"""The Realtime session, sans-I/O: client events and an injected clock in, server events out.

`RealtimeSession` takes client events (raw WebSocket text) and the current time, and returns the server
events to send, as plain dicts in the GA shape of the official SDK (`openai.types.realtime`). It wires
together one call's parts, each in its own module:

- `events`: client event validation (the SDK's own models), refusals, server event identifiers;
- `config`: the session configuration and `session.update`;
- `turns`: the input audio buffer and server VAD (turn-taking);
- `speech`: recognition of a committed turn and synthesis, shared by all sessions;
- `dialogue`: what to answer (a `Plan`) from the conversation;
- `conversation`: the items and what has been answered;
- `output`: the response in flight, its audio paced on the clock, its tool call.

Every refusal is an `error` event naming the offending client `event_id`, and the session lives on.

Recognition of a committed turn is the one slow step, so the session does not run it itself unless
told to (`recognise_inline`, for tests and tools): it stops at the turn's `conversation.item.done`,
exposes the audio as `waiting` (a `RecognitionJob`), and carries on from exactly there when the
adapter hands back the result with `recognised()`. The adapter feeds it nothing else meanwhile, so the
events come out in the same order either way.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from . import audio
from .asr import Recognition
from .config import apply_update, initial_config
from .conversation import Conversation, ItemMeta
from .dialogue import DialogueEngine, Plan, caller_name, greet_by_name, limit_words, say_exactly
from .events import CLIENT_EVENT_MODELS, MAX_JSON_DEPTH, ClientError, EventBuilder, parse_client_event
from .output import Response, ResponseWriter
from .profiles import EngineProfile
from .recognition import RecognitionJob
from .speech import Engines
from .turns import InputBuffer, TurnPausing, TurnStarted
from .vad import FRAME_MS

log = logging.getLogger("gateway.engine.session")

MIN_COMMIT_MS = 100  # the real API refuses to commit less than this

Events = list[dict[str, Any]]


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
        recognise_inline: bool = True,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.profile = profile
        self.engines = engines
        self.dialogue = DialogueEngine(profile)
        self.session_id = session_id
        self.events = EventBuilder()
        self.config: dict[str, Any] = initial_config(model, profile.voice or "marin")
        self.conversation = Conversation()
        self.input = InputBuffer(self.in_format, self.turn_detection)
        self.output = ResponseWriter(
            self.events, self.conversation, engines.synth, chunk_ms=chunk_ms, pace=pace, lead_ms=lead_ms
        )
        self.recognise_inline = recognise_inline
        self.max_json_depth = max_json_depth
        self.waiting: RecognitionJob | None = None  # a turn's audio awaiting `recognised()`
        # The audio a turn will be recognised on if it ends now (the caller paused): an adapter may
        # start recognising it at once and hand the result back when the same job is `waiting`.
        self.speculative: RecognitionJob | None = None
        self._resume: Callable[[Recognition | None, float], Events] | None = None

    @property
    def in_format(self) -> str:
        return self.config["audio"]["input"]["format"]["type"]

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"]["turn_detection"]

    @property
    def response(self) -> Response | None:
        return self.output.current

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.conversation.items

    def error_event(self, code: str, message: str) -> dict[str, Any]:
        """An `error` event for a refusal the adapter makes itself (no client event to name)."""
        return self.events.error(code, message, None, None)

    # ------------------------------------------------------------------ entry points
    def open(self, now: float = 0.0) -> Events:
        return [self.events.event("session.created", session=copy.deepcopy(self.config))]

    def receive(self, raw: str | bytes, now: float) -> Events:
        """One WebSocket message from the client -> the server events it causes (plus due audio). Must
        not be called while `waiting` is set."""
        assert self.waiting is None, "feed recognised() first"
        return self._handle(raw, now) + self._settle(now)

    def recognised(self, result: Recognition | None, now: float) -> Events:
        """The result of the `waiting` job -> the events from where the session stopped on."""
        return self._resume_with(result, now) + self._settle(now)

    def _resume_with(self, result: Recognition | None, now: float) -> Events:
        resume, self.waiting, self._resume = self._resume, None, None
        assert resume is not None
        out = resume(result, now)
        if self.waiting is None:
            out += self._run_turns(now)  # frames of the same append that came after the turn's end
        return out

    def _settle(self, now: float) -> Events:
        out: Events = []
        while self.recognise_inline and self.waiting is not None:
            job = self.waiting
            try:
                result = self.engines.recognise(job.profile, job.pcm, job.rate)
            except Exception:  # a decoder failure costs this turn's transcript, not the call
                log.exception("recognition failed", extra={"fields": {"session": self.session_id}})
                result = None
            out += self._resume_with(result, now)
        if self.waiting is None:
            out += self.poll(now)
        return out

    def _wait_for(self, job: RecognitionJob, resume: Callable[[Recognition | None, float], Events]) -> None:
        self.waiting, self._resume = job, resume

    def _handle(self, raw: str | bytes, now: float) -> Events:
        try:
            data = parse_client_event(raw, self.max_json_depth)
        except ClientError as exc:
            return [self.events.error(exc.code, exc.message, exc.param, None)]
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        etype = data.get("type")
        model = CLIENT_EVENT_MODELS.get(etype) if isinstance(etype, str) else None
        handler = self._handlers.get(etype) if isinstance(etype, str) else None
        if model is None or handler is None:
            return [
                self.events.error(
                    "invalid_event_type", f"unknown client event type {etype!r}", "type", event_id
                )
            ]
        try:
            model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            return [
                self.events.error(
                    "invalid_value", f"invalid {etype}: {first['msg']} at {param}", param, event_id
                )
            ]
        try:
            out = handler(self, data, now)
        except ClientError as exc:
            out = [self.events.error(exc.code, exc.message, exc.param, event_id)]
        except Exception:  # a bug must cost this one event, not the call: report it and carry on
            log.exception("event failed", extra={"fields": {"session": self.session_id, "type": etype}})
            out = [
                self.events.error(
                    "internal_error",
                    f"the engine failed to handle {etype}",
                    None,
                    event_id,
                    type_="server_error",
                )
            ]
        return out

    def next_deadline(self) -> float | None:
        return self.output.next_deadline()

    def poll(self, now: float) -> Events:
        """Release the output audio that is due at `now`; finish the response when all of it is out."""
        return self.output.poll(now, self.config)

    # ------------------------------------------------------------------ session
    def _on_session_update(self, data: dict[str, Any], now: float) -> Events:
        self.config = apply_update(self.config, data.get("session") or {})
        self.input.reconfigure(self.in_format, self.turn_detection)
        return [self.events.event("session.updated", session=copy.deepcopy(self.config))]

    # ------------------------------------------------------------------ input audio and turns
    def _on_append(self, data: dict[str, Any], now: float) -> Events:
        self.input.append(self._b64(data["audio"], "audio"))
        return self._run_turns(now)

    def _run_turns(self, now: float) -> Events:
        ev = self.events.event
        out: Events = []
        td = self.turn_detection
        for turn in self.input.turns():
            assert td is not None  # turns are only detected under turn detection
            if isinstance(turn, TurnPausing):
                pcm = self.input.recognisable(turn.first_frame)
                self.speculative = RecognitionJob(self.profile.name, pcm, self.input.rate)
                continue
            if isinstance(turn, TurnStarted):
                self.input.turn_item = self.events.new_id("item")
                out.append(
                    ev(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=turn.audio_start_ms,
                        item_id=self.input.turn_item,
                    )
                )
                if self.response is not None and td.get("interrupt_response", True):
                    out += self.output.cancel("turn_detected", self.config)
            else:
                item_id = self.input.turn_item or self.events.new_id("item")
                out.append(
                    ev("input_audio_buffer.speech_stopped", audio_end_ms=turn.audio_end_ms, item_id=item_id)
                )
                out += self._commit(item_id, turn.first_frame, now, auto=True, trailing=turn.trailing_frames)
                if self.waiting is not None:
                    break  # the rest of the audio waits, pending, until the turn is recognised
        return out

    def _commit(self, item_id: str, first_frame: int, now: float, auto: bool, trailing: int = 0) -> Events:
        ev = self.events.event
        rate = self.input.rate
        pcm = self.input.take(first_frame)
        # Recognised on the audio up to a short silence after the words (turns.RECOGNISE_AFTER_SILENCE_MS),
        # the same samples a pause made ready, so a recognition started then is this one.
        heard = pcm[: max(0, len(pcm) - trailing * rate * FRAME_MS // 1000)] if trailing else pcm
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "object": "realtime.item",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self.conversation.add(item)
        out = [
            ev("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous),
            ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous),
            ev("conversation.item.done", item=copy.deepcopy(item), previous_item_id=previous),
        ]
        self._wait_for(
            RecognitionJob(self.profile.name, heard, rate),
            lambda result, now: self._committed(item, pcm, rate, result, now, auto),
        )
        return out

    def _committed(
        self, item: dict[str, Any], pcm: Any, rate: int, result: Recognition | None, now: float, auto: bool
    ) -> Events:
        item_id = item["id"]
        transcript = result.transcript if result is not None else ""
        item["content"][0]["transcript"] = transcript
        log.info(
            "caller turn",
            extra={
                "fields": {
                    "session": self.session_id,
                    "item": item_id,
                    "audio_ms": len(pcm) * 1000 // rate,
                    "asr_confidence": result.confidence if result else None,
                    "asr_cpu_ms": result.cpu_ms if result else None,  # the log only, never the events
                    "pii": {"transcript": transcript},
                }
            },
        )
        out = [
            self.events.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(len(pcm) / rate, 3)},
            )
        ]
        td = self.turn_detection
        if auto and td is not None and td.get("create_response", True) and self.response is None:
            out += self._start_response({}, now)
        return out

    def _on_commit(self, data: dict[str, Any], now: float) -> Events:
        buffered = self.input.buffered_ms
        if buffered < MIN_COMMIT_MS:
            raise ClientError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: expected at least {MIN_COMMIT_MS} ms, have {buffered} ms",
                None,
            )
        item_id = self.input.turn_item or self.events.new_id("item")
        self.input.end_turn()
        return self._commit(item_id, 0, now, auto=False)

    def _on_clear(self, data: dict[str, Any], now: float) -> Events:
        self.input.clear()
        return [self.events.event("input_audio_buffer.cleared")]

    # ------------------------------------------------------------------ conversation items
    def _on_item_create(self, data: dict[str, Any], now: float) -> Events:
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
        if itype == "function_call_output" and not self.conversation.has_function_call(item.get("call_id")):
            raise ClientError(
                "invalid_value", f"no function call with call_id {item.get('call_id')!r}", "item.call_id"
            )
        item_id = item.get("id") or self.events.new_id("item")
        if self.conversation.find(item_id) is not None:
            raise ClientError("item_already_exists", f"an item with id {item_id!r} already exists", "item.id")
        item["id"] = item_id
        item["object"] = "realtime.item"
        item.setdefault("status", "completed")
        spoken: list[tuple[dict[str, Any], Any]] = []  # input_audio parts and their samples
        if itype == "message":
            for part in item.get("content") or []:
                if part.get("type") == "input_audio" and part.get("audio"):
                    spoken.append(
                        (
                            part,
                            audio.decode(self.in_format, self._b64(part.pop("audio"), "item.content.audio")),
                        )
                    )
        rate = self.input.rate

        def add(index: int) -> Events:
            """Transcribe the spoken parts one by one, then add the item."""
            if index < len(spoken):
                part, pcm = spoken[index]

                def heard(result: Recognition | None, now: float) -> Events:
                    part["transcript"] = result.transcript if result is not None else ""
                    return add(index + 1)

                self._wait_for(RecognitionJob(self.profile.name, pcm, rate), heard)
                return []
            previous = self.conversation.add(item)
            return [
                self.events.event(
                    "conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous
                ),
                self.events.event(
                    "conversation.item.done", item=copy.deepcopy(item), previous_item_id=previous
                ),
            ]

        return add(0)

    @staticmethod
    def _b64(value: str, param: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientError("invalid_base64", f"{param} is not valid base64: {exc}", param) from exc

    def _on_item_truncate(self, data: dict[str, Any], now: float) -> Events:
        item = self._existing(data["item_id"])
        meta = self.conversation.meta(item["id"])
        assert meta is not None
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
            self.events.event(
                "conversation.item.truncated", item_id=item["id"], content_index=0, audio_end_ms=end_ms
            )
        ]

    def _on_item_delete(self, data: dict[str, Any], now: float) -> Events:
        item = self._existing(data["item_id"])
        self.conversation.delete(item)
        return [self.events.event("conversation.item.deleted", item_id=item["id"])]

    def _on_item_retrieve(self, data: dict[str, Any], now: float) -> Events:
        item = self._existing(data["item_id"])
        return [self.events.event("conversation.item.retrieved", item=copy.deepcopy(item))]

    def _existing(self, item_id: str) -> dict[str, Any]:
        item = self.conversation.find(item_id)
        if item is None:
            raise ClientError("item_not_found", f"no item with id {item_id!r}", "item_id")
        return item

    # ------------------------------------------------------------------ responses
    def _on_response_create(self, data: dict[str, Any], now: float) -> Events:
        if self.response is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"response {self.response.id} is still in progress; cancel it first",
                None,
            )
        return self._start_response(data.get("response") or {}, now)

    def _on_response_cancel(self, data: dict[str, Any], now: float) -> Events:
        r = self.response
        wanted = data.get("response_id")
        if r is None or (wanted and wanted != r.id):
            raise ClientError(
                "response_cancel_not_active", "there is no active response to cancel", "response_id"
            )
        return self.output.cancel("client_cancelled", self.config)

    def _on_output_clear(self, data: dict[str, Any], now: float) -> Events:
        raise ClientError(
            "invalid_request",
            "output_audio_buffer.clear applies to WebRTC/SIP sessions only; over "
            "WebSocket the client owns playback (send response.cancel and truncate)",
            None,
        )

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

    def _plan(self, params: dict[str, Any], tools: set[str]) -> Plan:
        text = say_exactly(params.get("instructions"))
        opening = not any(i.get("role") == "user" for i in self.items)
        if text is not None:
            # The greeting (nothing said yet) of a caller the gateway remembers starts with their name.
            if opening:
                text = greet_by_name(text, caller_name(self.config.get("instructions")))
            return Plan(reply=text)
        fresh = self.conversation.unanswered()
        outputs = [i for i in fresh if i.get("type") == "function_call_output"]
        if outputs:
            out = outputs[-1]
            call = self.conversation.function_call(out.get("call_id"))
            meta = self.conversation.meta(call["id"]) if call is not None else None
            intent = meta.intent if meta is not None else None
            return self.dialogue.after_tool(intent, str(out.get("output", "")))
        users = [i for i in fresh if i.get("type") == "message" and i.get("role") == "user"]
        if users:
            said = " ".join(
                p.get("text") or p.get("transcript") or "" for p in users[-1].get("content") or []
            )
            # The session's instructions (session.update) are what a real model would follow; their facts
            # ("Opening hours: ...") are what this engine answers from. The profile's facts are the
            # defaults: a fact of the session's instructions replaces the profile's of the same label.
            instructions = f"{self.profile.instructions}\n{self.config.get('instructions') or ''}"
            return self.dialogue.answer(said, tools, instructions)
        if opening:
            plan = self.dialogue.opening()
            return Plan(reply=greet_by_name(plan.reply, caller_name(self.config.get("instructions"))))
        return Plan(reply=self.dialogue.dialogue.fallback_reply)

    def _start_response(self, params: dict[str, Any], now: float) -> Events:
        tools = self._allowed_tools(
            params.get("tools") if params.get("tools") is not None else self.config["tools"],
            params.get("tool_choice") or self.config["tool_choice"],
        )
        plan = self._plan(params, tools)
        limit = params.get("max_output_tokens", self.config.get("max_output_tokens"))
        if isinstance(limit, int) and plan.reply:
            plan = replace(plan, reply=limit_words(plan.reply, limit))
        conversation = params.get("conversation", "auto") != "none"
        if conversation:
            self.conversation.mark_answered()
        aout = (params.get("audio") or {}).get("output") or {}
        r = Response(
            id=self.events.new_id("resp"),
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
        log.info(
            "response",
            extra={
                "fields": {
                    "session": self.session_id,
                    "response": r.id,
                    "intent": plan.intent,
                    "kind": plan.kind,
                    "tool": plan.tool.name if plan.tool else None,
                    "pii": {"reply": plan.reply},
                }
            },
        )
        return self.output.start(r, self.config)

    _handlers: dict[str, Callable[[RealtimeSession, dict[str, Any], float], Events]] = {
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


__all__ = ["CLIENT_EVENT_MODELS", "ClientError", "Engines", "ItemMeta", "RealtimeSession"]
