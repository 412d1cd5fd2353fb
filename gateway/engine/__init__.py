"""Embedded Realtime-protocol engine: the offline default model behind the gateway (`gateway model`).

The engine speaks the GA OpenAI Realtime WebSocket protocol so the gateway reaches it with the official
SDK unchanged. Layers, from the wire inward:

- `server`: aiohttp adapter (auth, limits, profile selection, the socket loop, timers) and `main(argv)`.
- `session`: the sans-I/O session (client event + clock in, server events out), split by concern into
  `events`, `config`, `turns`, `conversation` and `output`.
- `speech`, `vad`, `asr` (Whisper tiny.en), `recognition` (its worker pool), `tts`: the speech parts.
- `dialogue`, `understanding`, `knowledge`: what the caller meant and what to say or do, per call.
- `audio`: G.711 (from `gateway.audio.g711`) and one-shot resampling of whole utterances.
"""
