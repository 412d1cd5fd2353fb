"""Asyncio inbound Event Socket client: one connection per FreeSWITCH worker.

A thin adapter around `gateway.esl.protocol.EslParser`: it opens the TCP connection, answers
`auth/request`, subscribes to events, feeds received bytes to the parser and routes what comes out:

* `api` / `command/reply` answers arrive in the order the commands were sent (mod_event_socket
  handles one command at a time per connection), so pending commands wait in a FIFO.
* `bgapi` results arrive later as BACKGROUND_JOB events; we choose the Job-UUID ourselves (the
  `Job-UUID` header of `bgapi`) and register the waiter *before* sending, so a fast job cannot
  finish before we listen for it.
* Events fan out to handlers registered for their `Unique-ID` plus handlers for every event.
  Handlers run on the read loop and must be quick; a handler that raises is logged, never fatal.

Reconnect policy lives here, not in the parser: after a drop the client reconnects with capped
exponential backoff and re-sends its subscription and filters; commands issued while disconnected
fail at once with `EslConnectionError` (a caller hearing "I could not transfer you" beats silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.esl import protocol
from gateway.esl.errors import (
    EslAuthError,
    EslCommandError,
    EslConnectionError,
    EslProtocolError,
    EslTimeout,
)
from gateway.esl.protocol import (
    ApiResponse,
    AuthRequest,
    CommandReply,
    DisconnectNotice,
    Event,
    InvalidEvent,
    RudeRejection,
)
from gateway.log import fields

log = logging.getLogger("gateway.esl")

EventHandler = Callable[[Event], object]

# What the gateway listens to by default: channel life cycle, DTMF for the model, bgapi results,
# everything mod_audio_stream reports (play = file-mode audio) and conference membership changes.
DEFAULT_EVENTS: tuple[str, ...] = (
    "CHANNEL_ANSWER",
    "CHANNEL_PARK",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "DTMF",
    "CHANNEL_PROGRESS",  # 180 on a leg the gateway originated (gateway/outbound/)
    "CHANNEL_PROGRESS_MEDIA",  # 183 on such a leg
    "BACKGROUND_JOB",
)
DEFAULT_CUSTOM: tuple[str, ...] = (
    "mod_audio_stream::connect",
    "mod_audio_stream::disconnect",
    "mod_audio_stream::error",
    "mod_audio_stream::json",
    "mod_audio_stream::play",
    "conference::maintenance",
)

_READ_SIZE = 65536


@dataclass(eq=False)
class Subscription:
    """Handle returned by `EslClient.subscribe`; `cancel()` removes the handler (and its filter)."""

    client: EslClient
    handler: EventHandler
    unique_id: str | None

    def cancel(self) -> None:
        self.client._unsubscribe(self)


class EslClient:
    """Inbound ESL connection to one FreeSWITCH worker.

    `connect()` connects once and raises on failure; `start()` keeps connecting in the background
    (what a long-running service wants when a worker may be down at start-up). With `reconnect=True`
    a dropped connection is re-established either way.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        bgapi_timeout: float = 75.0,  # `conference dial`/`originate` ring for up to 60 s
        reconnect: bool = True,
        backoff_initial: float = 0.25,
        backoff_max: float = 30.0,
        events: Iterable[str] = DEFAULT_EVENTS,
        custom: Iterable[str] = DEFAULT_CUSTOM,
        event_format: str = "json",
        filter_by_uuid: bool = False,
        name: str | None = None,
    ) -> None:
        self.host, self.port = host, int(port)
        self._password = password
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.bgapi_timeout = bgapi_timeout
        self.reconnect = reconnect
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.events = tuple(events)
        self.custom = tuple(custom)
        if event_format not in ("plain", "json"):
            raise ValueError("event_format must be 'plain' or 'json'")
        self.event_format = event_format
        # With filters on, FreeSWITCH sends only events of calls we hold (plus BACKGROUND_JOB); every
        # CUSTOM mod_audio_stream event carries all channel variables, so this saves real bandwidth.
        self.filter_by_uuid = filter_by_uuid
        self.name = name or f"{host}:{port}"

        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._maintain_task: asyncio.Task[None] | None = None
        self._pending: deque[tuple[str, asyncio.Future[object]]] = deque()
        self._jobs: dict[str, asyncio.Future[Event]] = {}
        self._send_lock = asyncio.Lock()
        self._by_uuid: dict[str, list[Subscription]] = {}
        self._all: list[Subscription] = []
        self._connected = asyncio.Event()
        self._closed = False
        self._background: set[asyncio.Task[object]] = set()
        self.connects = 0  # successful authentications, for tests and metrics

    # ---------------------------------------------------------------- connection life cycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - per-call deadline
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise EslTimeout(f"ESL {self.name}: not connected within {timeout} s") from None

    async def connect(self) -> None:
        """Connect and authenticate once; raises EslConnectionError / EslAuthError / EslTimeout."""
        if self._closed:
            raise EslConnectionError(f"ESL {self.name}: client closed")
        await self._open()
        if self.reconnect and self._maintain_task is None:
            self._maintain_task = asyncio.create_task(self._maintain(initial_connected=True))

    async def start(self) -> None:
        """Connect in the background, retrying with backoff until `close()`."""
        if self._maintain_task is None and not self._closed:
            self._maintain_task = asyncio.create_task(self._maintain(initial_connected=False))

    async def close(self) -> None:
        self._closed = True
        task, self._maintain_task = self._maintain_task, None
        if task is not None:
            task.cancel()
        # Drop the connection before waiting for the maintainer: on Python 3.11 wait_for() can swallow
        # a cancellation that races with a completing connect, and the maintainer then waits for this
        # connection to end (it checks _closed after every connect, so it exits once we drop it).
        await self._drop(EslConnectionError(f"ESL {self.name}: client closed"))
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop(EslConnectionError(f"ESL {self.name}: client closed"))
        for bg in list(self._background):
            bg.cancel()

    async def _maintain(self, *, initial_connected: bool) -> None:
        delay = self.backoff_initial
        if initial_connected:
            await self._wait_dropped()
        while not self._closed:
            try:
                await self._open()
            except EslConnectionError as exc:  # includes auth failures: a fixed password may come back
                log.warning(
                    "esl connect failed",
                    extra=fields(worker=self.name, error=str(exc), retry_s=round(delay, 2)),
                )
                # Jitter so a restarted FreeSWITCH is not hit by every gateway at the same instant.
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.backoff_max)
                continue
            except EslTimeout as exc:
                log.warning("esl connect timed out", extra=fields(worker=self.name, error=str(exc)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            delay = self.backoff_initial
            if self._closed or not self.reconnect:
                return
            await self._wait_dropped()

    async def _wait_dropped(self) -> None:
        task = self._read_task
        if task is not None and not task.done():
            # asyncio.wait neither raises the task's outcome nor swallows our own cancellation.
            await asyncio.wait([task])

    async def _open(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except TimeoutError:
            raise EslTimeout(f"ESL {self.name}: TCP connect timed out") from None
        except OSError as exc:
            raise EslConnectionError(f"ESL {self.name}: {exc}") from exc
        parser = protocol.EslParser()
        try:
            await asyncio.wait_for(self._handshake(reader, writer, parser), self.connect_timeout)
        except BaseException as exc:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if isinstance(exc, TimeoutError):
                raise EslTimeout(f"ESL {self.name}: no auth/request or auth reply in time") from None
            if isinstance(exc, EslProtocolError):
                raise EslConnectionError(f"ESL {self.name}: {exc}") from exc
            raise
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.create_task(self._read_loop(reader, parser))
        self.connects += 1
        try:
            await self._subscribe_all()
        except Exception as exc:
            await self._drop(EslConnectionError(f"ESL {self.name}: subscription failed: {exc}"))
            raise EslConnectionError(f"ESL {self.name}: subscription failed: {exc}") from exc
        self._connected.set()
        log.info("esl connected", extra=fields(worker=self.name))

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: protocol.EslParser
    ) -> None:
        pending: list[protocol.EslMessage] = []

        async def next_message() -> protocol.EslMessage:
            while not pending:
                data = await reader.read(_READ_SIZE)
                if not data:
                    raise EslConnectionError(f"ESL {self.name}: connection closed during authentication")
                pending.extend(parser.feed(data))
            return pending.pop(0)

        first = await next_message()
        if isinstance(first, RudeRejection):
            raise EslAuthError(f"ESL {self.name}: rejected by event_socket ACL: {first.body.strip()}")
        if not isinstance(first, AuthRequest):
            raise EslConnectionError(f"ESL {self.name}: expected auth/request, got {type(first).__name__}")
        writer.write(protocol.auth(self._password))
        await writer.drain()
        reply = await next_message()
        if not isinstance(reply, CommandReply):
            raise EslConnectionError(f"ESL {self.name}: expected auth reply, got {type(reply).__name__}")
        if not reply.ok:
            raise EslAuthError(f"ESL {self.name}: authentication refused: {reply.reply_text}")
        if pending:  # nothing is expected before our first command
            log.warning(
                "esl unexpected frames after auth", extra=fields(worker=self.name, count=len(pending))
            )

    async def _subscribe_all(self) -> None:
        frames: list[tuple[bytes, str]] = []
        if self.events or self.custom:
            frames.append((protocol.event(self.event_format, self.events, self.custom), "event"))
        if self.filter_by_uuid:
            # BACKGROUND_JOB must pass once any Unique-ID filter exists, or bgapi never completes (§2.5).
            frames.append((protocol.filter_add("Event-Name", "BACKGROUND_JOB"), "filter"))
            frames += [(protocol.filter_add("Unique-ID", u), "filter") for u in list(self._by_uuid)]
        for frame, label in frames:
            reply = await self._command(frame, label)
            if not isinstance(reply, CommandReply) or not reply.ok:
                # e.g. a userauth login whose esl-allowed-events excludes what we need
                text = reply.reply_text if isinstance(reply, CommandReply) else type(reply).__name__
                raise EslConnectionError(f"{label} refused: {text}")

    async def _read_loop(self, reader: asyncio.StreamReader, parser: protocol.EslParser) -> None:
        reason: Exception = EslConnectionError(f"ESL {self.name}: connection closed by FreeSWITCH")
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                for message in parser.feed(data):
                    self._route(message)
        except EslProtocolError as exc:
            log.error(
                "esl protocol error, dropping connection", extra=fields(worker=self.name, error=str(exc))
            )
            reason = EslConnectionError(f"ESL {self.name}: protocol error: {exc}")
        except (OSError, asyncio.IncompleteReadError) as exc:
            reason = EslConnectionError(f"ESL {self.name}: {exc}")
        except asyncio.CancelledError:
            reason = EslConnectionError(f"ESL {self.name}: client closed")
            raise
        finally:
            self._connected.clear()
            self._fail_pending(reason)
            writer = self._writer
            if writer is not None and self._reader is reader:
                writer.close()
                self._reader = self._writer = None
            if not self._closed:
                log.warning("esl disconnected", extra=fields(worker=self.name, reason=str(reason)))

    async def _drop(self, reason: Exception) -> None:
        self._connected.clear()
        task, self._read_task = self._read_task, None
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._fail_pending(reason)

    def _fail_pending(self, reason: Exception) -> None:
        futures: list[asyncio.Future[object]] = []
        while self._pending:
            futures.append(self._pending.popleft()[1])
        jobs, self._jobs = self._jobs, {}
        futures.extend(jobs.values())  # type: ignore[arg-type]
        for fut in futures:
            if not fut.done():
                fut.set_exception(reason)
                # A waiter that already timed out will never look; mark it seen so asyncio does not
                # log "exception was never retrieved" for a failure we have already reported.
                fut.exception()

    # ---------------------------------------------------------------- routing

    def _route(self, message: protocol.EslMessage) -> None:
        if isinstance(message, (CommandReply, ApiResponse)):
            if not self._pending:
                log.warning("esl reply without a pending command", extra=fields(worker=self.name))
                return
            _, fut = self._pending.popleft()
            if not fut.done():  # a timed-out command's reply still arrives; it is consumed here
                fut.set_result(message)
        elif isinstance(message, Event):
            self._dispatch(message)
        elif isinstance(message, InvalidEvent):
            log.warning(
                "esl event refused",
                extra=fields(worker=self.name, content_type=message.content_type, reason=message.reason),
            )
        elif isinstance(message, DisconnectNotice):
            log.info("esl disconnect notice", extra=fields(worker=self.name, body=message.body.strip()[:200]))
        else:
            log.debug("esl frame ignored", extra=fields(worker=self.name, type=type(message).__name__))

    def _dispatch(self, event: Event) -> None:
        if event.name == "BACKGROUND_JOB" and event.job_uuid:
            fut = self._jobs.pop(event.job_uuid, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        targets = list(self._all)
        if event.unique_id:
            targets += self._by_uuid.get(event.unique_id, ())
        for sub in targets:
            try:
                result = sub.handler(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._background.add(task)
                    task.add_done_callback(self._handler_done)
            except Exception:
                log.exception("esl event handler failed", extra=fields(worker=self.name, event=event.name))

    def _handler_done(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "esl async event handler failed", extra=fields(worker=self.name, error=repr(task.exception()))
            )

    # ---------------------------------------------------------------- subscriptions

    def subscribe(self, handler: EventHandler, unique_id: str | None = None) -> Subscription:
        """Call `handler(event)` for events of one channel (`unique_id`) or for every event (None)."""
        sub = Subscription(self, handler, unique_id)
        if unique_id is None:
            self._all.append(sub)
        else:
            first = unique_id not in self._by_uuid
            self._by_uuid.setdefault(unique_id, []).append(sub)
            if first and self.filter_by_uuid and self.connected:
                self._spawn(self._command(protocol.filter_add("Unique-ID", unique_id), "filter"))
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.unique_id is None:
            with contextlib.suppress(ValueError):
                self._all.remove(sub)
            return
        subs = self._by_uuid.get(sub.unique_id, [])
        with contextlib.suppress(ValueError):
            subs.remove(sub)
        if not subs and sub.unique_id in self._by_uuid:
            del self._by_uuid[sub.unique_id]
            if self.filter_by_uuid and self.connected:
                self._spawn(
                    self._command(protocol.filter_delete("Unique-ID", sub.unique_id), "filter delete")
                )

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._filter_done)

    def _filter_done(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "esl filter update failed", extra=fields(worker=self.name, error=str(task.exception()))
            )

    # ---------------------------------------------------------------- commands

    async def _command(self, frame: bytes, label: str, timeout: float | None = None) -> object:  # noqa: ASYNC109 - per-call deadline
        writer = self._writer
        if writer is None or writer.is_closing():
            raise EslConnectionError(f"ESL {self.name}: not connected")
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        async with self._send_lock:  # FIFO order of the waiters must equal the order on the wire
            self._pending.append((label, fut))
            try:
                writer.write(frame)
                await writer.drain()
            except (OSError, RuntimeError) as exc:
                raise EslConnectionError(f"ESL {self.name}: send failed: {exc}") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout or self.command_timeout)
        except TimeoutError:
            raise EslTimeout(
                f"ESL {self.name}: no reply to {label!r} within " f"{timeout or self.command_timeout} s"
            ) from None

    async def command(self, frame: bytes, timeout: float | None = None) -> CommandReply:  # noqa: ASYNC109 - per-call deadline
        """Send a pre-built command frame (event, filter, log ...); returns its command/reply."""
        reply = await self._command(frame, frame.split(b"\n", 1)[0].decode("utf-8", "replace"), timeout)
        if not isinstance(reply, CommandReply):
            raise EslProtocolError(f"expected command/reply, got {type(reply).__name__}")
        return reply

    async def api(self, cmd: str, timeout: float | None = None) -> str:  # noqa: ASYNC109 - per-call deadline
        """`api <cmd>`; returns the body; `-ERR`/`-USAGE` raise EslCommandError with FreeSWITCH's text.

        `api` runs on FreeSWITCH's listener thread and holds back every event of this connection
        while it runs: use `bgapi` for anything that may take more than a moment.
        """
        reply = await self._command(protocol.api(cmd), cmd, timeout)
        if isinstance(reply, CommandReply):  # e.g. `-ERR command not found` when api is not allowed
            if not reply.ok:
                raise EslCommandError(cmd, reply.reply_text)
            return reply.reply_text
        if not isinstance(reply, ApiResponse):
            raise EslProtocolError(f"expected api/response, got {type(reply).__name__}")
        if not reply.ok:
            raise EslCommandError(cmd, reply.body)
        return reply.body

    async def bgapi(self, cmd: str, timeout: float | None = None) -> str:  # noqa: ASYNC109 - per-call deadline
        """`bgapi <cmd>` with our own Job-UUID; returns the BACKGROUND_JOB body (the API output)."""
        job_uuid = str(uuidlib.uuid4())
        loop = asyncio.get_running_loop()
        job: asyncio.Future[Event] = loop.create_future()
        self._jobs[job_uuid] = job  # registered before sending: the result can beat the reply
        try:
            reply = await self._command(protocol.bgapi(cmd, job_uuid), f"bgapi {cmd}", timeout)
            if not isinstance(reply, CommandReply) or not reply.ok:
                text = reply.reply_text if isinstance(reply, CommandReply) else repr(reply)
                raise EslCommandError(cmd, text)
            try:
                event = await asyncio.wait_for(asyncio.shield(job), timeout or self.bgapi_timeout)
            except TimeoutError:
                raise EslTimeout(
                    f"ESL {self.name}: no BACKGROUND_JOB for {cmd!r} within "
                    f"{timeout or self.bgapi_timeout} s"
                ) from None
        finally:
            self._jobs.pop(job_uuid, None)
        body = event.body or ""
        if protocol.is_error_reply(body):
            raise EslCommandError(cmd, body)
        return body

    async def __aenter__(self) -> EslClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def parse_address(spec: str) -> tuple[str, int, str]:
    """`host:port:password` (the FREESWITCH_ESL / GATEWAY_ESL_WORKERS form) -> (host, port, password).

    The password is everything after the second colon, so it may itself contain colons.
    """
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"ESL address must be host:port:password, not {spec!r}")
    # No default: FreeSWITCH's shipped event_socket password is public knowledge, and a worker still
    # using it would accept any `api` command from anyone who reaches the port.
    password = parts[2] if len(parts) == 3 else ""
    if not password:
        raise ValueError(f"ESL address {parts[0]}:{parts[1]} has no password (host:port:password)")
    return parts[0], int(parts[1]), password
