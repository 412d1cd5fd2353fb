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
        self._control: deque[dict[str, Any]] = deque()
        self._wakeup = asyncio.Event()
        self._conn: Any = None
        self._closing = False
        self.audio_dropped = 0

    def append_audio(self, payload: bytes) -> None:
        if len(self._audio) == self._audio.maxlen:
            self.audio_dropped += 1
        self._audio.append(rt.input_audio_append(payload))
        self._wakeup.set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._closing

    def send(self, event: dict[str, Any]) -> None:
        self._control.append(event)
        self._wakeup.set()

    async def run(self, setup: list[dict[str, Any]]) -> None:
        from openai import AsyncOpenAI  # imported here: `gateway call` and the null model never need it

        client = AsyncOpenAI(api_key=self._api_key, websocket_base_url=self._base_url, max_retries=0)
        try:
            manager = client.realtime.connect(model=self._model, extra_query={"profile": self._profile})
            self._conn = await asyncio.wait_for(manager.enter(), self._connect_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure("connect", f"{type(exc).__name__}: {exc}")
            return
        log.info("model connected", extra=fields(call=self.call_uuid, model=self._model))
        sender = receiver = None
        try:
            for event in setup:  # session.update and the greeting precede any caller audio
                await self._conn.send(event)
            sender = asyncio.create_task(self._send_loop(), name=f"model-send-{self.call_uuid}")
            receiver = asyncio.create_task(self._recv_loop(), name=f"model-recv-{self.call_uuid}")
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if not self._closing:
                exc = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
                detail = f"{type(exc).__name__}: {exc}" if exc else "socket closed by model"
                self._on_failure("dropped", detail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closing:
                self._on_failure("dropped", f"{type(exc).__name__}: {exc}")
        finally:
            for task in (sender, receiver):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (sender, receiver) if t is not None), return_exceptions=True)
            await self.close()

    async def _send_loop(self) -> None:
        conn = self._conn
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._control or self._audio:
                if self._control:
                    await conn.send(self._control.popleft())
                else:
                    # Pre-serialised append: the SDK's typed path costs more than the audio work itself.
                    await conn.send_raw(self._audio.popleft())

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
