"""`gateway model`: the aiohttp adapter around `RealtimeSession` (one per WebSocket).

    ws://HOST:PORT/v1/realtime?model=...&profile=...

This is where sockets, timers, auth and limits live; the protocol itself is in `session.py`. Each
connection runs one loop: wait for a client message or for the next output-audio deadline, feed the
session, send what it returns. Speech parts (phone decoder, synthesiser, recognition workers) are
loaded once before the listening line is logged, so the first call pays no start-up cost.

No session can stall another: a committed turn is decoded in a worker process (`recognition.py`) while
the event loop serves everyone else; a large client message (JSON parse, base64, VAD over many seconds
of audio) is handled on one side thread, which shares the interpreter with the event loop instead of
blocking it; each connection's unread messages are bounded, so a fast sender is slowed by TCP rather
than by the engine's memory; and a message over `max_message_bytes` is refused before it is read.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hmac
import itertools
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from ..runtime import freeze_startup_heap
from .asr import WhisperTranscriber
from .knowledge import index_for
from .profiles import EngineProfile, load_profiles, profiles_dir
from .recognition import RecognitionJob, RecognitionPool
from .session import RealtimeSession
from .settings import EngineSettings, is_loopback
from .speech import Engines
from .tts import EspeakSynth

log = logging.getLogger("gateway.engine")

ENGINE_KEY = web.AppKey("engine", "Engine")
# A client message at least this long is handled on the bulk thread, not on the event loop. The
# gateway's appends (20-100 ms of audio) are a few kB; 32 kB is ~0.5 s of 24 kHz PCM.
BULK_MESSAGE_BYTES = 32 * 1024
# Unread client messages queued per connection; beyond this the socket is not read (TCP backpressure).
INBOX_MESSAGES = 8


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: static messages, structured fields (PII under `pii`)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        base = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            base += " " + " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class Engine:
    """Process-wide state: settings, profiles, shared speech parts, live session count."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        directory = profiles_dir(settings.profiles_dir)
        self.profiles: dict[str, EngineProfile] = load_profiles(directory)
        if settings.default_profile not in self.profiles:
            raise SystemExit(
                f"gateway model: default profile {settings.default_profile!r} not found in "
                f"{directory} (have: {', '.join(sorted(self.profiles)) or 'none'}); set "
                "GATEWAY_ENGINE_DEFAULT_PROFILE or --default-profile"
            )
        # The transcriber lives in the worker processes; this process loads its own only when it
        # recognises itself (asr_workers 0), which saves ~250 MB when it does not.
        contexts = {name: p.dialogue.asr_prompt for name, p in self.profiles.items() if p.dialogue.asr_prompt}
        self.engines = Engines(
            synth=EspeakSynth(),
            transcriber=WhisperTranscriber() if settings.asr_workers == 0 else None,
            contexts=contexts,
        )
        self._warm_up()
        self.recognition = RecognitionPool(
            settings.asr_workers,
            local=lambda job: self.engines.recognise(job.profile, job.pcm, job.rate),
            contexts=contexts,
        )
        self.recognition.warm_up()
        # One thread for large client messages: they queue for it instead of each taking a share of the
        # interpreter lock from the event loop.
        self.bulk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine-bulk")
        self.sessions = 0
        self._ids = itertools.count(1)
        self.profiles_directory = directory

    def _warm_up(self) -> None:
        """Design the resampling filters and run each speech part once, so the first caller is as fast
        as the hundredth."""
        import numpy as np

        from . import audio

        synth = self.engines.synth
        for name in sorted(self.profiles):  # fixed order: the same audio for these in every process
            profile = self.profiles[name]
            d = profile.dialogue
            texts = [profile.greeting, d.fallback_reply, d.out_of_scope.confirm, d.out_of_scope.reply]
            texts += [d.out_of_scope.reply_after_tool, d.out_of_scope.no_transfer_reply]
            texts += [t for i in d.intents for t in (i.reply, i.reply_after_tool, i.declined_reply)]
            texts += [p.answer for p in index_for(profile.knowledge, profile.instructions).passages]
            for text in texts:
                if text:
                    synth.synthesize(text)
        speech = synth.synthesize("Hello.")
        for rate in (8000, 24000):
            audio.resample(speech.pcm, speech.rate, rate)
        for rate in (8000, 24000):
            audio.resample(np.zeros(rate // 10, np.int16), rate, 16000)
        if self.engines.transcriber is not None:
            self.engines.recognise(
                "", np.random.default_rng(1).normal(0, 3000, 16000).astype(np.int16), 16000
            )

    def new_session_id(self) -> str:
        return f"sess_{os.getpid():x}_{next(self._ids):06d}"

    def close(self) -> None:
        self.recognition.close()
        self.bulk.shutdown(wait=False, cancel_futures=True)


def bearer_accepted(authorization: str, tokens: list[str]) -> bool:
    """Whether an `Authorization` header carries one of `tokens`. Every token is compared, each in
    constant time, so the time taken says nothing about which one (or how much of one) matched."""
    given = authorization.encode()
    accepted = False
    for token in tokens:
        accepted |= hmac.compare_digest(given, b"Bearer " + token.encode())
    return accepted


class RealtimeSocket(web.WebSocketResponse):
    """The server side of one Realtime connection.

    aiohttp refuses a message over `max_msg_size` as soon as its header declares the length (nothing of
    it is buffered) and closes with 1009 (Message Too Big, RFC 6455 section 7.4.1). Before that close
    goes out, this sends the Realtime `error` event the client can log, built by `too_big`."""

    too_big: Any = None  # () -> the error event, set once the session exists

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and self.too_big is not None and not self.closed:
            event, self.too_big = self.too_big(), None
            log.warning("refused: message too large", extra={"fields": {"error": event["error"]["message"]}})
            try:
                await self.send_str(json.dumps(event, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                pass
            message = message or b"message too big"
        return await super().close(code=code, message=message, drain=drain)


def _refuse(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    return web.json_response(body, status=status)


async def realtime(request: web.Request) -> web.StreamResponse:
    engine: Engine = request.app[ENGINE_KEY]
    settings = engine.settings
    tokens = settings.accepted_tokens
    if tokens and not bearer_accepted(request.headers.get("Authorization", ""), tokens):
        log.warning("refused: bad token", extra={"fields": {"peer": request.remote}})
        return _refuse(401, "invalid_api_key", "missing or wrong bearer token")
    name = request.query.get("profile") or settings.default_profile
    profile = engine.profiles.get(name)
    if profile is None:
        log.warning("refused: unknown profile", extra={"fields": {"peer": request.remote, "profile": name}})
        return _refuse(404, "profile_not_found", f"no agent profile {name!r}")
    if engine.sessions >= settings.max_sessions:
        log.warning("refused: session limit", extra={"fields": {"limit": settings.max_sessions}})
        return _refuse(503, "too_many_sessions", "session limit reached")
    ws = RealtimeSocket(compress=False, heartbeat=None, max_msg_size=settings.max_message_bytes)
    await ws.prepare(request)
    session = RealtimeSession(
        profile,
        engine.engines,
        model=request.query.get("model") or "gpt-realtime",
        session_id=engine.new_session_id(),
        chunk_ms=settings.chunk_ms,
        pace=settings.pace,
        lead_ms=settings.lead_ms,
        recognise_inline=False,
        max_json_depth=settings.max_json_depth,
    )
    limit = settings.max_message_bytes
    ws.too_big = lambda: session.error_event(
        "message_too_large",
        f"a client message may be at most {limit} bytes; send audio in smaller appends. Closing (1009).",
    )
    engine.sessions += 1
    log.info(
        "session opened",
        extra={
            "fields": {
                "session": session.session_id,
                "profile": name,
                "peer": request.remote,
                "sessions": engine.sessions,
            }
        },
    )
    try:
        await _run(ws, session, engine)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    except Exception:  # one broken session never takes the process down
        log.exception("session failed", extra={"fields": {"session": session.session_id}})
    finally:
        engine.sessions -= 1
        if not ws.closed:
            await ws.close()
        log.info(
            "session closed", extra={"fields": {"session": session.session_id, "sessions": engine.sessions}}
        )
    return ws


def same_audio(a: RecognitionJob, b: RecognitionJob) -> bool:
    return a.profile == b.profile and a.rate == b.rate and np.array_equal(a.pcm, b.pcm)


async def _send(ws: web.WebSocketResponse, events: list[dict[str, Any]]) -> None:
    for ev in events:
        await ws.send_str(json.dumps(ev, separators=(",", ":")))


async def _run(ws: web.WebSocketResponse, session: RealtimeSession, engine: Engine) -> None:
    # A reader task queues client messages; this loop is the only one that touches the session and
    # the only writer, so events leave in exactly the order the session produced them. (aiohttp's own
    # receive(timeout=...) closes the socket on timeout, so the pacing wait is on the queue instead.)
    clock = time.monotonic
    inbox: asyncio.Queue[Any] = asyncio.Queue(INBOX_MESSAGES)
    loop = asyncio.get_running_loop()

    # Recognition started when the caller paused (session.speculative): if the turn then ends with the
    # same audio, its result is the turn's, and the caller does not wait for it from the end of the
    # silence window. Speech that resumes makes it stale; it is then cancelled.
    early: tuple[RecognitionJob, asyncio.Task[Any]] | None = None

    def start_early() -> None:
        nonlocal early
        job, session.speculative = session.speculative, None
        if job is not None:
            if early is not None:
                early[1].cancel()
            early = (job, asyncio.ensure_future(engine.recognition.recognise(job)))

    async def recognise(job: RecognitionJob) -> Any:
        nonlocal early
        started, early = early, None
        if started is not None and same_audio(started[0], job):
            return await started[1]
        if started is not None:
            started[1].cancel()
        return await engine.recognition.recognise(job)

    async def feed(data: str | bytes) -> None:
        if len(data) >= BULK_MESSAGE_BYTES:
            events = await loop.run_in_executor(engine.bulk, session.receive, data, clock())
        else:
            events = session.receive(data, clock())
        await _send(ws, events)
        start_early()
        while session.waiting is not None:  # a committed turn: decoded off the loop, then carry on
            job: RecognitionJob = session.waiting
            result = await recognise(job)
            await _send(ws, session.recognised(result, clock()))
            start_early()

    async def read() -> None:
        # Not in `finally`: when this task is cancelled the loop below is leaving anyway, and waiting to
        # queue the end marker on a full inbox would never finish.
        try:
            async for msg in ws:
                await inbox.put(msg)  # waits while the inbox is full: the socket is not read meanwhile
        except (ConnectionError, RuntimeError):
            pass
        await inbox.put(None)

    reader = asyncio.create_task(read())
    try:
        await _send(ws, session.open(clock()))
        while True:
            deadline = session.next_deadline()
            try:
                if deadline is None:
                    msg = await inbox.get()
                else:
                    msg = await asyncio.wait_for(inbox.get(), max(0.0, deadline - clock()))
            except TimeoutError:
                await _send(ws, session.poll(clock()))
                continue
            if msg is None:
                break
            if msg.type == WSMsgType.TEXT:
                await feed(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await feed(bytes(msg.data))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        reader.cancel()
        pending = [reader] + ([early[1]] if early is not None else [])
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def build_app(engine: Engine) -> web.Application:
    app = web.Application()
    app[ENGINE_KEY] = engine
    app.router.add_get("/v1/realtime", realtime)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "sessions": engine.sessions, "profiles": sorted(engine.profiles)}
        )

    app.router.add_get("/healthz", healthz)
    return app


def parse_args(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        prog="gateway model",
        description="Embedded offline Realtime-protocol engine (env GATEWAY_ENGINE_*; flags override).",
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--token",
        help="accept this bearer token (also GATEWAY_ENGINE_TOKENS, several for rotation); required "
        "when --host is not a loopback address",
    )
    p.add_argument("--default-profile")
    p.add_argument("--profiles-dir")
    p.add_argument("--pace", type=float, help="output audio speed vs real time; 0 = send at once")
    p.add_argument("--log-level")
    args = p.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


async def serve(settings: EngineSettings, ready: asyncio.Event | None = None) -> None:
    started = time.monotonic()
    engine = Engine(settings)
    runner = web.AppRunner(build_app(engine), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    freeze_startup_heap()
    sockets = site._server.sockets if site._server else []  # noqa: SLF001 - the bound port when port=0
    port = sockets[0].getsockname()[1] if sockets else settings.port
    log.info(
        "listening",
        extra={
            "fields": {
                "url": f"ws://{settings.host}:{port}/v1/realtime",
                "host": settings.host,
                "port": port,
                "profiles": sorted(engine.profiles),
                "default_profile": settings.default_profile,
                "auth": f"{len(settings.accepted_tokens)} token(s)" if settings.accepted_tokens else "any",
                "loopback_only": is_loopback(settings.host),
                "asr_workers": settings.asr_workers,
                "startup_s": round(time.monotonic() - started, 3),
            }
        },
    )
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests run serve() in a task)
            pass
    try:
        await stop.wait()
        log.info("stopping", extra={"fields": {"sessions": engine.sessions}})
    finally:
        await runner.cleanup()
        engine.close()


def main(argv: list[str] | None = None) -> int:
    overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = EngineSettings(**overrides)
    except Exception as exc:  # pydantic ValidationError: name the setting and stop
        print(f"gateway model: invalid settings: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error(
            "cannot listen",
            extra={"fields": {"host": settings.host, "port": settings.port, "error": str(exc)}},
        )
        return 1
    return 0
