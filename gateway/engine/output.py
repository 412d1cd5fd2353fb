"""The response side: at most one response in flight, its spoken item paced out as audio deltas with the
transcript in step, then its tool call, then `response.done`.

The only time-dependent behaviour of the engine lives here: `poll(now)` releases the audio chunks due at
`now` and `next_deadline()` says when to call it again. The first `lead_ms` go at once and the rest at
`pace` x real time, which keeps a response "in progress" while it plays so that barge-in can cancel it.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from . import audio
from .conversation import Conversation, ItemMeta
from .dialogue import Plan
from .events import EventBuilder
from .tts import EspeakSynth, Speech


@dataclass
class SpokenItem:
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
class Response:
    id: str
    started: float
    conversation: bool
    modalities: list[str]
    out_format: dict[str, Any]
    voice: Any
    metadata: Any
    plan: Plan
    output: list[dict[str, Any]] = field(default_factory=list)
    speaking: SpokenItem | None = None
    pending_tool: bool = False


class ResponseWriter:
    """Writes the session's responses as server events; owns the one response in flight."""

    def __init__(
        self,
        events: EventBuilder,
        conversation: Conversation,
        synth: EspeakSynth,
        *,
        chunk_ms: int,
        pace: float,
        lead_ms: int,
    ) -> None:
        self._events = events
        self._conversation = conversation
        self._synth = synth
        self.chunk_ms = chunk_ms
        self.pace = pace
        self.lead_ms = lead_ms
        self.current: Response | None = None

    def start(self, r: Response, config: dict[str, Any]) -> list[dict[str, Any]]:
        """`response.created`, the spoken part begun (paced by `poll`), or all of it when nothing is
        spoken. `config` is the session configuration (speed, max_output_tokens)."""
        self.current = r
        out = [self._events.event("response.created", response=self._response_obj(r, "in_progress", config))]
        if r.plan.reply:
            out += self._begin_message(r, r.plan.reply, config)
        if r.speaking is None:  # nothing to pace (text only, or no reply): tool call and done now
            out += self._continue(r, config)
        return out

    def next_deadline(self) -> float | None:
        r = self.current
        if r is None or r.speaking is None or r.speaking.done:
            return None
        return self._due(r, r.speaking.sent)

    def poll(self, now: float, config: dict[str, Any]) -> list[dict[str, Any]]:
        """Release the output audio that is due at `now`; finish the response when all of it is out."""
        ev = self._events.event
        out: list[dict[str, Any]] = []
        r = self.current
        while r is not None and r.speaking is not None and not r.speaking.done:
            sp = r.speaking
            if sp.sent >= len(sp.chunks):
                out += self._finish_audio(r, "completed")
                out += self._continue(r, config)
                r = self.current
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
                    ev("response.output_audio_transcript.delta", **base, delta=heard[len(sp.sent_text) :])
                )
                sp.sent_text = heard
            out.append(ev("response.output_audio.delta", **base, delta=base64.b64encode(chunk).decode()))
            meta = self._conversation.meta(
                sp.item["id"]
            )  # absent for an out-of-band response or a deleted item
            if meta is not None:
                meta.generated_ms = sp.sent_ms
        return out

    def cancel(self, reason: str, config: dict[str, Any]) -> list[dict[str, Any]]:
        r = self.current
        assert r is not None
        out: list[dict[str, Any]] = []
        if r.speaking is not None and not r.speaking.done:
            out += self._finish_audio(r, "incomplete")
        # A tool call not yet emitted is dropped: a cancelled "goodbye" must not hang up the call.
        out.append(self._done(r, "cancelled", {"type": "cancelled", "reason": reason}, config))
        return out

    def _due(self, r: Response, index: int) -> float:
        if self.pace <= 0:
            return r.started
        assert r.speaking is not None
        return r.started + max(0, index * r.speaking.chunk_ms - self.lead_ms) / 1000.0 / self.pace

    def _response_obj(
        self,
        r: Response,
        status: str,
        config: dict[str, Any],
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
            "max_output_tokens": config["max_output_tokens"],
            "audio": {"output": {"format": r.out_format, "voice": r.voice}},
            "metadata": r.metadata,
        }
        if usage is not None:
            obj["usage"] = usage
        return obj

    def _begin_message(self, r: Response, text: str, config: dict[str, Any]) -> list[dict[str, Any]]:
        ev = self._events.event
        audio_out = "audio" in r.modalities
        item = {
            "id": self._events.new_id("item"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "object": "realtime.item",
            "content": [],
        }
        index = len(r.output)
        r.output.append(item)
        out = [
            ev("response.output_item.added", response_id=r.id, output_index=index, item=copy.deepcopy(item))
        ]
        meta = ItemMeta()
        if r.conversation:
            previous = self._conversation.add(item, meta)
            out.append(ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous))
        base = {"response_id": r.id, "item_id": item["id"], "output_index": index, "content_index": 0}
        if not audio_out:
            item["content"] = [{"type": "output_text", "text": text}]
            item["status"] = "completed"
            out += [
                ev("response.content_part.added", **base, part={"type": "text", "text": ""}),
                ev("response.output_text.delta", **base, delta=text),
                ev("response.output_text.done", **base, text=text),
                ev("response.content_part.done", **base, part={"type": "text", "text": text}),
            ]
            return out + self._item_done(r, index, item)
        fmt = r.out_format["type"]
        out_rate, width = audio.FORMATS[fmt]
        speech = self._synth.synthesize(text, speed=float(config["audio"]["output"].get("speed") or 1.0))
        wire = audio.encode(fmt, audio.resample(speech.pcm, speech.rate, out_rate))
        step = out_rate * width * self.chunk_ms // 1000
        chunks = [wire[i : i + step] for i in range(0, len(wire), step)]
        r.speaking = SpokenItem(
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
        out.append(ev("response.content_part.added", **base, part={"type": "audio", "transcript": ""}))
        return out

    def _finish_audio(self, r: Response, status: str) -> list[dict[str, Any]]:
        ev = self._events.event
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
            out.append(ev("response.output_audio_transcript.delta", **base, delta=heard[len(sp.sent_text) :]))
            sp.sent_text = heard
        sp.item["status"] = status
        sp.item["content"] = [{"type": "output_audio", "transcript": heard}]
        out += [
            ev("response.output_audio.done", **base),
            ev("response.output_audio_transcript.done", **base, transcript=heard),
            ev("response.content_part.done", **base, part={"type": "audio", "transcript": heard}),
        ]
        return out + self._item_done(r, sp.output_index, sp.item)

    def _continue(self, r: Response, config: dict[str, Any]) -> list[dict[str, Any]]:
        """After the spoken part (or instead of it): the tool call, then response.done."""
        ev = self._events.event
        out: list[dict[str, Any]] = []
        tool = r.plan.tool
        if tool is not None and not r.pending_tool:
            r.pending_tool = True
            args = json.dumps(tool.arguments, separators=(",", ":"), sort_keys=True)
            item = {
                "id": self._events.new_id("item"),
                "type": "function_call",
                "status": "in_progress",
                "object": "realtime.item",
                "name": tool.name,
                "call_id": self._events.new_id("call"),
                "arguments": "",
            }
            index = len(r.output)
            r.output.append(item)
            out.append(
                ev(
                    "response.output_item.added",
                    response_id=r.id,
                    output_index=index,
                    item=copy.deepcopy(item),
                )
            )
            if r.conversation:
                previous = self._conversation.add(item, ItemMeta(intent=r.plan.intent))
                out.append(ev("conversation.item.added", item=copy.deepcopy(item), previous_item_id=previous))
            base = {
                "response_id": r.id,
                "item_id": item["id"],
                "output_index": index,
                "call_id": item["call_id"],
            }
            item["arguments"] = args
            item["status"] = "completed"
            out += [
                ev("response.function_call_arguments.delta", **base, delta=args),
                ev("response.function_call_arguments.done", **base, name=tool.name, arguments=args),
            ]
            out += self._item_done(r, index, item)
        out.append(self._done(r, "completed", None, config))
        return out

    def _item_done(self, r: Response, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        """Close an output item: `response.output_item.done`, and `conversation.item.done` when the
        response writes to the conversation (an out-of-band response does not)."""
        ev = self._events.event
        done = copy.deepcopy(item)
        out = [ev("response.output_item.done", response_id=r.id, output_index=index, item=done)]
        if r.conversation:
            out.append(ev("conversation.item.done", item=copy.deepcopy(item)))
        return out

    def _done(
        self, r: Response, status: str, details: dict[str, Any] | None, config: dict[str, Any]
    ) -> dict[str, Any]:
        self.current = None
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
        audio_ms = 0
        for i in r.output:
            meta = self._conversation.meta(i["id"]) if i.get("type") == "message" else None
            audio_ms += (meta.generated_ms or 0) if meta is not None else 0
        audio_tokens = audio_ms // 50
        usage = {
            "total_tokens": text_tokens + audio_tokens,
            "input_tokens": 0,
            "output_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        return self._events.event(
            "response.done", response=self._response_obj(r, status, config, details, usage)
        )
