"""A scripted Realtime-protocol (GA) server for tests, on loopback, speaking what the official SDK expects.

Every event it sends is validated with the SDK's own `openai.types.realtime.RealtimeServerEvent` models
(strict pydantic validation, not the SDK's lenient construct), and every event it receives is validated
against `RealtimeClientEvent`, so a test passing here means the gateway spoke the real protocol.

Behaviour (a small model of the real server, enough for the media plane's cases):
- `session.update` -> `session.updated`; audio formats come from it (pcmu or pcm 24 kHz).
- `response.create` -> a response whose audio is a tone of `Script.greeting_ms`, generated at
  `Script.speed` times real time (the real service is faster than real time too).
- an energy VAD on appended audio: speech_started / speech_stopped / committed / input transcription,
  then an automatic response (`Script.reply_ms` of audio, or a tool call when `Script.tool` is set).
  On speech_started during a response it does NOT cancel by itself, so the gateway's cancel is observable.
- `response.cancel` -> `response.done` cancelled (or an error if nothing is active, like the real one).
- `conversation.item.truncate` -> `conversation.item.truncated`, or an error when audio_end_ms exceeds the
  audio generated for that item (as the real service does).
- `response.create` with `conversation: "none"` and text output -> an out-of-band text response
  (`Script.oob_text`, split into `response.output_text.delta`s) with `conversation_id: null`, the request's
  metadata echoed, and usage; nothing is added to the conversation and no audio is sent.
- `Script.fail`: "error" sends a server_error after the greeting starts; "drop" closes TCP mid-greeting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.audio import g711

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


@dataclass
class Script:
    greeting_ms: int = 1000
    reply_ms: int = 1200
    speed: float = 4.0  # audio generated at this multiple of real time
    chunk_ms: int = 100  # audio per delta
    vad_rms: float = 400.0
    vad_start_frames: int = 3  # 60 ms of speech -> speech_started
    vad_stop_frames: int = 10  # 200 ms of silence -> speech_stopped
    tool: dict[str, Any] | None = None  # {"name": ..., "arguments": {...}} instead of a spoken reply
    fail: str | None = None  # "error" | "drop"
    fail_after_ms: int = 300
    reply_transcript: str = "We are open Monday to Friday."
    caller_transcript: str = "what are your opening hours"
    # Out-of-band text responses (`conversation: "none"`, text output): this text, or None to never answer.
    oob_text: str | None = "Summary from the model."
    oob_delay_ms: int = 0


@dataclass
class SessionRecord:
    path: str
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)  # all but input_audio_buffer.append
    appended_bytes: int = 0
    invalid_client_events: list[str] = field(default_factory=list)
    sent_types: list[str] = field(default_factory=list)
    generated_ms: dict[str, float] = field(default_factory=dict)  # item id -> audio ms generated

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == t]


class FakeRealtime:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.sessions: list[SessionRecord] = []
        self._server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeRealtime:
        self._server = await serve(self._handler, "127.0.0.1", 0, compression=None, max_size=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        rec = SessionRecord(path=ws.request.path, headers=dict(ws.request.headers))
        self.sessions.append(rec)
        await _Session(ws, rec, self.script).run()


class _Session:
    def __init__(self, ws: ServerConnection, rec: SessionRecord, script: Script) -> None:
        self.ws, self.rec, self.script = ws, rec, script
        self.fmt: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
        self.response_task: asyncio.Task[None] | None = None
        self.response_id: str | None = None
        self.voiced = 0
        self.unvoiced = 0
        self.in_speech = False
        self.input_ms = 0.0
        self.speech_item: str | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": _id("event"), **event}
        SERVER_EVENT.validate_python(event)  # the fake itself must speak the GA protocol exactly
        self.rec.sent_types.append(event["type"])
        await self.ws.send(json.dumps(event))

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"type": "realtime", "model": "gpt-realtime"}})
        try:
            async for raw in self.ws:
                event = json.loads(raw)
                try:
                    CLIENT_EVENT.validate_python(event)
                except Exception as exc:
                    self.rec.invalid_client_events.append(f"{event.get('type')}: {exc}")
                if event.get("type") == "input_audio_buffer.append":
                    self.rec.appended_bytes += len(base64.b64decode(event["audio"]))
                    await self._vad(base64.b64decode(event["audio"]))
                else:
                    self.rec.received.append(event)
                    await self._on_event(event)
        except Exception:
            pass
        finally:
            for t in list(self.tasks):
                t.cancel()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _on_event(self, event: dict[str, Any]) -> None:
        t = event.get("type")
        if t == "session.update":
            fmt = event["session"].get("audio", {}).get("output", {}).get("format")
            if fmt:
                self.fmt = fmt
            keep = ("instructions", "output_modalities", "audio")
            echoed = {k: v for k, v in event["session"].items() if k in keep}
            await self.send({"type": "session.updated", "session": {"type": "realtime", **echoed}})
        elif t == "response.create" and (event.get("response") or {}).get("conversation") == "none":
            if self.script.oob_text is not None:
                self._spawn(self._out_of_band(event["response"]))
        elif t == "response.create":
            self._start_response(self.script.greeting_ms, "greeting")
            if self.script.fail:
                self._spawn(self._fail_later())
        elif t == "response.cancel":
            if self.response_task and not self.response_task.done():
                self.response_task.cancel()
                await self._done(self.response_id or "", "cancelled")
            else:
                await self.send({"type": "error", "error": {"type": "invalid_request_error",
                                 "code": "response_cancel_not_active",
                                 "message": "Cancellation failed: no active response found"}})
        elif t == "conversation.item.truncate":
            item, end = event["item_id"], int(event["audio_end_ms"])
            if item not in self.rec.generated_ms or end > self.rec.generated_ms[item] + 0.5:
                await self.send({"type": "error", "error": {"type": "invalid_request_error",
                                 "code": "invalid_value",
                                 "message": f"audio_end_ms {end} beyond the item's audio"}})
            else:
                await self.send({"type": "conversation.item.truncated", "item_id": item, "content_index": 0,
                                 "audio_end_ms": end})
        elif t == "conversation.item.create":
            item = {**event["item"], "id": _id("item")}
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
            await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    async def _fail_later(self) -> None:
        await asyncio.sleep(self.script.fail_after_ms / 1000)
        if self.script.fail == "error":
            await self.send({"type": "error", "error": {"type": "server_error", "code": None,
                             "message": "The server had an error while processing your request."}})
        elif self.script.fail == "drop":
            self.ws.transport.abort()  # TCP gone, no close frame

    # -------------------------------------------------------------------- VAD
    async def _vad(self, payload: bytes) -> None:
        if self.fmt.get("type") == "audio/pcmu":
            pcm = g711.ulaw_to_array(payload).astype(np.float64)
            ms = len(payload) / 8
        else:
            pcm = np.frombuffer(payload[: len(payload) & ~1], dtype="<i2").astype(np.float64)
            ms = len(pcm) / 24
        self.input_ms += ms
        rms = float(np.sqrt((pcm**2).mean())) if len(pcm) else 0.0
        if rms > self.script.vad_rms:
            self.voiced += 1
            self.unvoiced = 0
        else:
            self.unvoiced += 1
            self.voiced = 0 if not self.in_speech else self.voiced
        if not self.in_speech and self.voiced >= self.script.vad_start_frames:
            self.in_speech = True
            self.speech_item = _id("item")
            await self.send({"type": "input_audio_buffer.speech_started",
                             "audio_start_ms": int(self.input_ms - 60), "item_id": self.speech_item})
        elif self.in_speech and self.unvoiced >= self.script.vad_stop_frames:
            self.in_speech = False
            item = self.speech_item or _id("item")
            await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(self.input_ms),
                             "item_id": item})
            await self.send({"type": "input_audio_buffer.committed", "item_id": item,
                             "previous_item_id": None})
            await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item,
                             "content_index": 0, "transcript": self.script.caller_transcript,
                             "usage": {"type": "duration", "seconds": 1.0}})
            if self.response_task and not self.response_task.done():
                return  # the gateway should have cancelled; a real server would queue
            if self.script.tool:
                self._start_response(self.script.reply_ms, "tool")
            else:
                self._start_response(self.script.reply_ms, "reply")

    # -------------------------------------------------------------------- responses
    def _start_response(self, audio_ms: int, kind: str) -> None:
        self.response_id = _id("resp")
        self.response_task = asyncio.create_task(self._respond_quietly(self.response_id, audio_ms, kind))
        self.tasks.add(self.response_task)
        self.response_task.add_done_callback(self.tasks.discard)

    async def _respond_quietly(self, rid: str, audio_ms: int, kind: str) -> None:
        try:
            await self._respond(rid, audio_ms, kind)
        except ConnectionClosed:
            pass  # the gateway hung up mid-response

    def _tone(self, ms: int, start_ms: float) -> bytes:
        rate = 8000 if self.fmt.get("type") == "audio/pcmu" else 24000
        n = int(rate * ms / 1000)
        t = (np.arange(n) + start_ms * rate / 1000) / rate
        pcm = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        return g711.pcm16_to_ulaw(pcm) if rate == 8000 else pcm.astype("<i2").tobytes()

    async def _respond(self, rid: str, audio_ms: int, kind: str) -> None:
        s = self.script
        item = _id("item")
        await self.send({"type": "response.created", "response": {"id": rid, "object": "realtime.response",
                                                                  "status": "in_progress", "output": []}})
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                         "item": {"id": item, "object": "realtime.item", "type": "message",
                                  "role": "assistant", "status": "in_progress", "content": []}})
        self.rec.generated_ms[item] = 0.0
        sent = 0.0
        while sent < audio_ms:
            ms = min(s.chunk_ms, audio_ms - sent)
            await self.send({"type": "response.output_audio.delta", "response_id": rid, "item_id": item,
                             "output_index": 0, "content_index": 0,
                             "delta": base64.b64encode(self._tone(int(ms), sent)).decode()})
            sent += ms
            self.rec.generated_ms[item] = sent
            await asyncio.sleep(ms / 1000 / s.speed)
        await self.send({"type": "response.output_audio.done", "response_id": rid, "item_id": item,
                         "output_index": 0, "content_index": 0})
        text = {"greeting": "Thank you for calling.", "reply": s.reply_transcript, "tool": "Goodbye!"}[kind]
        await self.send({"type": "response.output_audio_transcript.done", "response_id": rid, "item_id": item,
                         "output_index": 0, "content_index": 0, "transcript": text})
        if kind == "tool" and s.tool:
            await self.send({"type": "response.function_call_arguments.done", "response_id": rid,
                             "item_id": _id("item"), "output_index": 1, "call_id": _id("call"),
                             "name": s.tool["name"], "arguments": json.dumps(s.tool.get("arguments", {}))})
        await self._done(rid, "completed")

    async def _out_of_band(self, params: dict[str, Any]) -> None:
        """A text response outside the default conversation, as the GA server sends one."""
        text = self.script.oob_text or ""
        rid, item = _id("resp"), _id("item")
        meta = params.get("metadata")
        head: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": "in_progress",
                                "conversation_id": None, "output_modalities": ["text"], "output": [],
                                "metadata": meta}
        await asyncio.sleep(self.script.oob_delay_ms / 1000)
        await self.send({"type": "response.created", "response": head})
        msg = {"id": item, "object": "realtime.item", "type": "message", "role": "assistant",
               "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0,
                         "item": msg})
        await self.send({"type": "response.content_part.added", "response_id": rid, "item_id": item,
                         "output_index": 0, "content_index": 0, "part": {"type": "text", "text": ""}})
        words = text.split(" ")
        for i, word in enumerate(words):
            await self.send({"type": "response.output_text.delta", "response_id": rid, "item_id": item,
                             "output_index": 0, "content_index": 0,
                             "delta": word + (" " if i < len(words) - 1 else "")})
        await self.send({"type": "response.output_text.done", "response_id": rid, "item_id": item,
                         "output_index": 0, "content_index": 0, "text": text})
        await self.send({"type": "response.content_part.done", "response_id": rid, "item_id": item,
                         "output_index": 0, "content_index": 0, "part": {"type": "text", "text": text}})
        done_item = {**msg, "status": "completed", "content": [{"type": "output_text", "text": text}]}
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0,
                         "item": done_item})
        await self.send({"type": "response.done", "response": {
            **head, "status": "completed", "output": [done_item],
            "usage": {"total_tokens": 160, "input_tokens": 140, "output_tokens": 20,
                      "input_token_details": {"text_tokens": 140, "audio_tokens": 0, "cached_tokens": 0},
                      "output_token_details": {"text_tokens": 20, "audio_tokens": 0}}}})

    async def _done(self, rid: str, status: str) -> None:
        resp: dict[str, Any] = {"id": rid, "object": "realtime.response", "status": status, "output": []}
        if status == "cancelled":
            resp["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
        await self.send({"type": "response.done", "response": resp})


async def _serve_forever(port: int) -> None:
    srv = FakeRealtime(Script(greeting_ms=2000, reply_ms=2000, speed=2.0))
    srv._server = await serve(srv._handler, "127.0.0.1", port, compression=None, max_size=None)
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def fake_servers() -> AsyncIterator[Callable[..., Awaitable[FakeRealtime]]]:
    """A factory of fake Realtime servers (one per call of it, each with its own script), all stopped on exit:
    the body of the gateway and records tests' model fixtures."""
    servers: list[FakeRealtime] = []

    async def factory(**script: Any) -> FakeRealtime:
        srv = FakeRealtime(Script(**script))
        await srv.__aenter__()
        servers.append(srv)
        return srv

    try:
        yield factory
    finally:
        for srv in servers:
            await srv.__aexit__()


if __name__ == "__main__":  # `gateway.demo` falls back to this when the embedded engine is absent
    import sys

    asyncio.run(_serve_forever(int(sys.argv[1])))
