"""What one call's audio is on each side, decided once per call.

The transport carries caller audio as L16 at 8 or 16 kHz (mod_audio_stream) or as 8 kHz G.711 mu-law
(Twilio Media Streams). The Realtime session gets `audio/pcmu` for every 8 kHz call (a table lookup, or
no work at all for mu-law transports) and 24 kHz `audio/pcm` for 16 kHz calls, through the streaming
resampler, because Realtime's PCM format is 24 kHz only
(https://platform.openai.com/docs/api-reference/realtime-client-events/session/update).
"""

from __future__ import annotations

from typing import Any

from gateway.audio import g711
from gateway.audio.resample import StreamResampler
from gateway.proto import realtime as rt
from gateway.proto.media import Encoding


class CallAudio:
    """Converts caller audio to the model's format and agent audio back to the transport's, and counts
    durations on both sides. One per call; pure (no I/O, no clock)."""

    def __init__(self, rate: int, encoding: Encoding = "l16") -> None:
        if encoding == "pcmu" and rate != 8000:
            raise ValueError("mu-law transports are 8 kHz")
        if rate not in (8000, 16000):
            raise ValueError("rate must be 8000 or 16000")
        self.rate = rate
        self.encoding: Encoding = encoding
        self.model_format: dict[str, Any] = dict(rt.FORMAT_PCMU if rate == 8000 else rt.FORMAT_PCM24)
        self._wide = rate == 16000
        self._up = StreamResampler(rate, rt.MODEL_PCM_RATE) if self._wide else None
        self._down = StreamResampler(rt.MODEL_PCM_RATE, rate) if self._wide else None
        self.bytes_per_ms = rate // 1000 if encoding == "pcmu" else rate * 2 // 1000
        self.silence_byte = g711.ULAW_SILENCE if encoding == "pcmu" else 0
        self._model_bytes_per_ms = 8.0 if not self._wide else rt.MODEL_PCM_RATE * 2 / 1000.0
        if encoding == "l16" and not self._wide:
            # The common narrowband case, 50 times a second each way per call: the G.711 kernels
            # themselves, without a method call and two branches in front of them.
            self.to_model = g711.pcm16_to_ulaw  # type: ignore[method-assign]
            self.from_model = g711.ulaw_to_pcm16  # type: ignore[method-assign]

    def to_model(self, audio: bytes) -> bytes:
        """Caller audio (transport encoding) -> model input format."""
        if self.encoding == "pcmu":
            return audio
        if self._up is None:
            return g711.pcm16_to_ulaw(audio)
        return self._up.process_bytes(audio)

    def from_model(self, payload: bytes) -> bytes:
        """Agent audio in the model's output format -> transport encoding."""
        if self.encoding == "pcmu":
            return payload
        if self._down is None:
            return g711.ulaw_to_pcm16(payload)
        return self._down.process_bytes(payload[: len(payload) & ~1])

    def from_pcm16(self, pcm: bytes) -> bytes:
        """L16 at the call's rate (a synthesised prompt) -> transport encoding."""
        return g711.pcm16_to_ulaw(pcm) if self.encoding == "pcmu" else pcm

    def model_ms(self, payload_len: int) -> float:
        return payload_len / self._model_bytes_per_ms

    def model_bytes(self, ms: float) -> int:
        """Bytes of `ms` of audio in the model's input format (whole samples)."""
        n = int(self._model_bytes_per_ms * ms)
        return n - n % 2 if self._wide else n

    def transport_ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    def frame_bytes(self, ms: float) -> int:
        return int(self.bytes_per_ms * ms)

    def reset_output(self) -> None:
        """After a barge-in: no filter memory of the interrupted reply in the next one."""
        if self._wide:
            self._down = StreamResampler(rt.MODEL_PCM_RATE, self.rate)
