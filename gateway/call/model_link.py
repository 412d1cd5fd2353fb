"""The per-call link to the model: the Realtime session through the official SDK, or a null stand-in.

RealtimeLink runs two tasks under one supervisor: a sender that drains two queues (control events first,
so cancel/truncate never wait behind caller audio) and a receiver that parses each server event once and
hands it to the call's dispatch table. Either task ending ends the link; the call decides what that means.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from websockets.protocol import OPEN as _OPEN

from gateway.log import fields
from gateway.proto import realtime as rt

log = logging.getLogger("gateway.model")

Dispatch = Callable[[dict[str, Any]], None]
OnFailure = Callable[[str, str], None]  # (kind, detail)


class ModelLink(Protocol):
    def append_audio(self, payload: bytes) -> None: ...
    def send(self, event: dict[str, Any]) -> None: ...
    async def run(self, setup: list[dict[str, Any]]) -> None: ...
    async def close(self) -> None: ...


_CLIENTS: dict[tuple[str, str | None], Any] = {}


def shared_client(api_key: str, base_url: str | None) -> Any:
    """One `AsyncOpenAI` per (key, URL) for the whole process; each call opens only its own WebSocket.

    A client per call cost ~850 KB of RSS and ~19 ms of CPU each (its httpx client and TLS context),
    almost all of a call's memory (docs/benchmarks.md). The Realtime connection (`client.realtime.connect`)
    is per call and shares nothing with other calls but the client's settings: no loop-bound state, so
    one client serves every event loop of the process (tests run several)."""
    client = _CLIENTS.get((api_key, base_url))
    if client is None:
        from openai import AsyncOpenAI  # imported here: `gateway call` and the null model never need it

        client = _CLIENTS[(api_key, base_url)] = AsyncOpenAI(api_key=api_key, websocket_base_url=base_url,
                                                             max_retries=0)
    return client


def preload(api_key: str, base_url: str | None) -> None:
    """Do at start-up what the first call would: the SDK imported (~800 modules), the shared client built,
    its Realtime resource loaded, and the SDK's request transform run once on each kind of event the
    gateway sends (it builds its type caches on first use). Measured, the first call paid ~0.9 s of CPU
    and ~19 MB for it, behind which other calls' set-up and audio waited; and what is loaded after
    `freeze_startup_heap` stays in every full collection's walk (docs/benchmarks.md)."""
    client = shared_client(api_key, base_url)
    client.realtime.connect  # noqa: B018 - loads the Realtime resource and its connection module
    if _uses_tls(base_url):
        shared_tls_context()
    try:  # the SDK's private transform: only a warm-up, never a reason not to start
        from openai._utils import maybe_transform
        from openai.types.realtime import RealtimeClientEventParam
        from openai.types.realtime.response_create_event_with_references_param import (
            ResponseCreateEventWithReferencesParam,
        )

        td = {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
              "interrupt_response": True}
        tools = [{"type": "function", "name": "end_call", "description": "x",
                  "parameters": {"type": "object", "properties": {}}}]
        for event in (rt.session_update(audio_format=rt.FORMAT_PCMU, instructions="x", voice="alloy",
                                        turn_detection=td, tools=tools, input_transcription="whisper-1"),
                      rt.greeting_response("x"), rt.response_create(), rt.response_cancel(),
                      rt.item_truncate("item", 1), rt.function_call_output("call", {}),
                      rt.user_text_item("x")):
            # The type exactly as the SDK's AsyncRealtimeConnection.send passes it: its caches key on it.
            maybe_transform(event, RealtimeClientEventParam | ResponseCreateEventWithReferencesParam)
    except Exception as exc:
        log.info("model SDK warm-up skipped", extra=fields(error=f"{type(exc).__name__}: {exc}"))


_TLS: list[Any] = []


def shared_tls_context() -> Any:
    """The TLS context for every wss:// model socket. Left to itself the WebSocket library builds one per
    connection (`ssl.create_default_context()`: ~30 ms of CPU and ~900 KB here, the CA bundle parsed
    each time); contexts are made to be shared by many connections."""
    if not _TLS:
        import ssl

        _TLS.append(ssl.create_default_context())
    return _TLS[0]


def _uses_tls(base_url: str | None) -> bool:
    return base_url is None or base_url.startswith(("wss:", "https:"))  # None: the SDK's wss default


class RealtimeLink:
    def __init__(
        self,
        *,
        call_uuid: str,
        base_url: str | None,
        api_key: str,
        model: str,
        profile: str,
        dispatch: Dispatch,
        on_failure: OnFailure,
        connect_timeout: float,
        max_pending_audio: int,
        append_bytes: int = 0,
    ) -> None:
        self.call_uuid = call_uuid
        self._base_url = base_url
        self._api_key = api_key
        self._model = model
        self._profile = profile
        self._dispatch = dispatch
        self._on_failure = on_failure
        self._connect_timeout = connect_timeout
        self._audio: deque[str] = deque(maxlen=max(1, max_pending_audio))  # oldest caller audio dropped first
        # Caller audio goes out in appends of `append_bytes` (settings.model_append_ms): fewer JSON
        # messages, base64 calls, WebSocket frames and sender wake-ups per second, for that much delay.
        self._append_bytes = append_bytes
        self._batch = bytearray()
        self._control: deque[dict[str, Any]] = deque()
        self._conn: Any = None
        self._ready = False  # the set-up events are out: appends and control events may follow
        self._ws: Any = None  # the SDK connection's websockets connection, for appends written at once
        self._sender: asyncio.Task[None] | None = None  # only while something is queued
        self._closing = False
        self.audio_dropped = 0

    def append_audio(self, payload: bytes) -> None:
        batch = self._batch
        if len(batch) + len(payload) < self._append_bytes:
            batch += payload
            return
        if batch:
            batch += payload
            payload = bytes(batch)
            batch.clear()
        text = rt.input_audio_append(payload)
        if not self._audio and not self._control and self._write_now(text):
            return
        if len(self._audio) == self._audio.maxlen:
            self.audio_dropped += 1
        self._audio.append(text)
        self._kick()

    def _write_now(self, text: str) -> bool:
        """The append written from the caller's own frame, when nothing waits before it and the socket
        takes it: no task, no coroutine per append. Otherwise (backed-up socket, closing, a queue) it
        waits for the sender."""
        ws = self._ws
        if ws is None or ws.paused or ws.fragmented_send_waiter is not None or ws.protocol.state is not _OPEN:
            return False
        try:
            ws.protocol.send_text(text.encode())
            ws.send_data()
        except Exception:  # the socket failed: the receive loop sees it and ends the link
            return True
        return True

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._closing

    def send(self, event: dict[str, Any]) -> None:
        self._control.append(event)
        self._kick()

    def _kick(self) -> None:
        """A sender task for what is queued, started on demand and gone once the queues are empty: a
        call holds no sender task while its appends are written at once (a task and its coroutine,
        context and futures are ~25 of the ~300 objects per call each full collection walks)."""
        if self._ready and (self._sender is None or self._sender.done()) and not self._closing:
            self._sender = asyncio.create_task(self._send_loop(), name=f"model-send-{self.call_uuid}")

    async def run(self, setup: list[dict[str, Any]]) -> None:
        """Connect, send the set-up, then receive on this task until the call ends or the model goes."""
        client = shared_client(self._api_key, self._base_url)
        try:
            options = {"ssl": shared_tls_context()} if _uses_tls(self._base_url) else {}
            manager = client.realtime.connect(model=self._model, extra_query={"profile": self._profile},
                                              websocket_connection_options=options)  # type: ignore[arg-type]
            self._conn = await asyncio.wait_for(manager.enter(), self._connect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure("connect", f"{type(exc).__name__}: {exc}")
            return
        log.info("model connected", extra=fields(call=self.call_uuid, model=self._model))
        try:
            for event in setup:  # session.update and the greeting precede any caller audio
                await self._conn.send(event)
            ws = getattr(self._conn, "_connection", None)  # appends may now be written at once
            self._ws = ws if all(hasattr(ws, a) for a in ("paused", "fragmented_send_waiter", "protocol",
                                                         "send_data")) else None
            self._ready = True
            if self._control or self._audio:  # what came during the set-up
                self._kick()
            await self._recv_loop()
            if not self._closing:
                self._on_failure("dropped", "socket closed by model")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closing:
                self._on_failure("dropped", f"{type(exc).__name__}: {exc}")
        finally:
            sender, self._sender = self._sender, None
            if sender is not None:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            await self.close()

    async def _send_loop(self) -> None:
        conn = self._conn
        # Appends go straight to the SDK connection's WebSocket: its send_raw adds a reconnect queue,
        # a send receipt and an anyio task lookup per message (~40 % of the gateway's CPU per append
        # under cProfile at 100 calls, docs/benchmarks.md), for reconnects this link never asks for
        # (the call falls back instead). Control events keep the SDK's typed path.
        send_raw = getattr(getattr(conn, "_connection", None), "send", None) or conn.send_raw
        try:
            while self._control or self._audio:
                if self._control:
                    await conn.send(self._control.popleft())
                else:
                    # Pre-serialised append: the SDK's typed path costs more than the audio work itself.
                    await send_raw(self._audio.popleft())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket failed under a send: the call falls back; the receive
            # loop ends with the connection (closed here, in case the failure left it open)
            if not self._closing:
                self._on_failure("dropped", f"{type(exc).__name__}: {exc}")
                self._closing = True
                if self._ws is not None:
                    self._ws.transport.abort()
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    async def _recv_loop(self) -> None:
        conn = self._conn
        while True:
            raw = await conn.recv_bytes()
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("model sent invalid JSON", extra=fields(call=self.call_uuid, bytes=len(raw)))
                continue
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                log.warning("model sent an event without a type", extra=fields(call=self.call_uuid))
                continue
            self._dispatch(event)

    async def close(self) -> None:
        self._closing = True
        self._ws = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:  # already gone: nothing to release
                pass


class NullLink:
    """In-process stand-in for the benchmark and for tests of the media path alone.

    `echo`: every caller chunk comes straight back as agent audio; `silence`: the same amount of silence.
    The audio goes to the call directly (no JSON, no base64): what is measured is the media plane, not a
    model socket. A real link adds one JSON parse and one base64 decode per delta (~100 ms of audio)."""

    def __init__(self, *, mode: str, audio_sink: Callable[[str | None, str | None, bytes], None],
                 silence_byte: int = 0xFF) -> None:
        self._mode = mode
        self._sink = audio_sink
        self._silence_byte = silence_byte
        self._closed = asyncio.Event()

    def append_audio(self, payload: bytes) -> None:
        if self._mode == "silence":
            payload = bytes([self._silence_byte]) * len(payload)
        self._sink("item_null", "resp_null", payload)

    def send(self, event: dict[str, Any]) -> None:
        pass  # nothing to greet with, nothing to cancel

    async def run(self, setup: list[dict[str, Any]]) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()
