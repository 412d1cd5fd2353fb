"""`gateway call --protocol twilio`: place one call exactly as Twilio Media Streams would.

Twilio's side of a bidirectional `<Connect><Stream>` (https://www.twilio.com/docs/voice/media-streams/
websocket-messages): the upgrade signed with X-Twilio-Signature, `connected`, `start` (streamSid,
callSid, tracks, customParameters, mediaFormat), 20 ms mu-law `media` paced at real time (silence
around the caller's speech, as a live call does), `dtmf`, then `stop`. Agent `media` is played out at
real time from a buffer; a `mark` is echoed once everything before it has played; `clear` empties the
buffer. The summary says what the caller heard and when.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from gateway.audio import g711
from gateway.client.call import SPEECH_RMS, load_audio

FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class TwilioCallSummary:
    url: str
    call_sid: str
    stream_sid: str
    http_status: int | None = None
    frames_sent: int = 0
    greeting_s: float = 0.0
    reply_s: float = 0.0
    first_reply_latency_ms: float | None = None  # end of caller speech -> first reply media received
    marks_sent_back: int = 0
    clears: int = 0
    heard_s: float = 0.0  # agent audio actually played out of the buffer (cleared audio is not heard)
    close_code: int | None = None
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    reply_arrivals: list[tuple[float, int]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("reply_arrivals")
        return doc


class _Speaker:
    """Twilio's playout buffer: media plays back-to-back at real time from arrival; a mark is due once
    everything before it has played; `clear` stops playback now and drops the rest."""

    def __init__(self) -> None:
        self.play_end = 0.0
        self.marks: deque[tuple[str, float]] = deque()
        self.heard_s = 0.0
        self._segments: list[tuple[float, float]] = []

    def media(self, n_bytes: int, now: float) -> None:
        start = max(self.play_end, now)
        self.play_end = start + n_bytes / 8000.0
        self._segments.append((start, self.play_end))

    def mark(self, name: str) -> None:
        self.marks.append((name, self.play_end))

    def due_marks(self, now: float) -> list[str]:
        names = []
        while self.marks and self.marks[0][1] <= now:
            names.append(self.marks.popleft()[0])
        return names

    def clear(self, now: float) -> None:
        self.heard_s += sum(max(0.0, min(end, now) - start) for start, end in self._segments)
        self._segments = []
        self.marks.clear()
        self.play_end = now

    def finish(self, now: float) -> float:
        self.clear(now)
        return self.heard_s


async def place_twilio_call(
    url: str,
    audio: str | Path | np.ndarray | bytes,
    *,
    auth_token: str,
    signed_url: str | None = None,
    caller: str = "+15550111",
    called: str = "+15550100",
    profile: str = "",
    dtmf: str = "",
    parameters: dict[str, str] | None = None,
    wait_for_greeting: bool = True,
    greeting_timeout: float = 10.0,
    quiet_s: float = 0.8,
    reply_timeout: float = 15.0,
    max_duration: float = 120.0,
    call_sid: str | None = None,
) -> TwilioCallSummary:
    from twilio.request_validator import RequestValidator

    call_sid, stream_sid = call_sid or new_sid("CA"), new_sid("MZ")
    s = TwilioCallSummary(url=url, call_sid=call_sid, stream_sid=stream_sid)
    t_start = time.monotonic()
    pcm = load_audio(audio, 8000)
    n_frames = max(1, -(-len(pcm) // 160))
    speech = np.zeros(n_frames * 160, dtype=np.int16)
    speech[: len(pcm)] = pcm
    frames = speech.reshape(n_frames, 160)
    voiced = np.nonzero(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) > SPEECH_RMS)[0]
    last_voiced = int(voiced[-1]) if voiced.size else -1
    silence = bytes([g711.ULAW_SILENCE]) * FRAME_BYTES
    signature = RequestValidator(auth_token).compute_signature(signed_url or url, {})
    speaker = _Speaker()
    last_audio_t: list[float | None] = [None]
    seq = [0]

    def msg(event: str, **body: Any) -> str:
        seq[0] += 1
        return json.dumps({"event": event, "sequenceNumber": str(seq[0]), "streamSid": stream_sid, **body})

    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, headers={"X-Twilio-Signature": signature}, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            s.http_status = exc.status
            s.errors.append(f"upgrade refused: {exc.status}")
            return s
        except (aiohttp.ClientError, OSError) as exc:
            s.errors.append(f"connect: {exc}")
            return s
        s.http_status = 101

        async def read_loop() -> None:
            async for m in ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    continue
                doc = json.loads(m.data)
                now = time.monotonic()
                if doc.get("event") == "media":
                    n = len(base64.b64decode(doc["media"]["payload"]))
                    speaker.media(n, now)
                    s.reply_arrivals.append((now, n))
                    last_audio_t[0] = now
                elif doc.get("event") == "mark":
                    speaker.mark(doc["mark"]["name"])
                elif doc.get("event") == "clear":
                    s.clears += 1
                    speaker.clear(now)

        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_str(msg("start", start={
            "streamSid": stream_sid, "accountSid": new_sid("AC"), "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": {"profile": profile, "caller": caller, "called": called, "callSid": call_sid,
                                 **(parameters or {})},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}))
        reader = asyncio.create_task(read_loop())
        t0 = time.monotonic()
        chunk = [0]

        async def send(payload: bytes) -> bool:
            due = t0 + chunk[0] * FRAME_MS / 1000.0
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if ws.closed:
                return False
            chunk[0] += 1
            await ws.send_str(msg("media", media={"track": "inbound", "chunk": str(chunk[0]),
                                                  "timestamp": str(chunk[0] * FRAME_MS),
                                                  "payload": base64.b64encode(payload).decode()}))
            for name in speaker.due_marks(time.monotonic()):
                await ws.send_str(msg("mark", mark={"name": name}))
                s.marks_sent_back += 1
            s.frames_sent += 1
            return True

        alive = True
        if wait_for_greeting:
            g0 = time.monotonic()
            while alive and time.monotonic() - t_start < max_duration:
                now = time.monotonic()
                if last_audio_t[0] is None and now - g0 > greeting_timeout:
                    break
                if last_audio_t[0] is not None and now - last_audio_t[0] > quiet_s:
                    break
                alive = await send(silence)
        s.greeting_s = round(sum(n for _, n in s.reply_arrivals) / 8000, 3)
        greeting_count = len(s.reply_arrivals)
        for digit in dtmf:
            await ws.send_str(msg("dtmf", dtmf={"track": "inbound_track", "digit": digit}))
        speech_end = time.monotonic()
        for i in range(n_frames):
            if not alive:
                break
            alive = await send(g711.pcm16_to_ulaw(frames[i].astype("<i2").tobytes()))
            if i == last_voiced:
                speech_end = time.monotonic()
        end_t = time.monotonic()
        while alive and time.monotonic() - t_start < max_duration:
            now = time.monotonic()
            replied = bool(s.reply_arrivals) and s.reply_arrivals[-1][0] >= speech_end
            if replied and last_audio_t[0] is not None and now - last_audio_t[0] > quiet_s \
                    and not speaker.marks:
                break
            if not replied and now - end_t > reply_timeout:
                s.errors.append("no reply audio within the reply timeout")
                break
            alive = await send(silence)
        if not ws.closed:
            await ws.send_str(msg("stop", stop={"accountSid": new_sid("AC"), "callSid": call_sid}))
            await ws.close()
        s.close_code = ws.close_code
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    after = [t for t, _ in s.reply_arrivals[greeting_count:] if t >= speech_end]
    if after:
        s.first_reply_latency_ms = round((after[0] - speech_end) * 1000.0, 1)
    s.reply_s = round(sum(n for t, n in s.reply_arrivals[greeting_count:] if t >= speech_end) / 8000, 3)
    s.heard_s = round(speaker.finish(time.monotonic()), 3)
    s.duration_s = round(time.monotonic() - t_start, 3)
    return s
