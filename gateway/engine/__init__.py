"""Embedded Realtime-protocol engine: the offline default model behind the gateway (`gateway model`).

The engine speaks the GA OpenAI Realtime WebSocket protocol so the gateway reaches it with the official
SDK unchanged. Layers, from the wire inward:

- `server`: aiohttp adapter (auth, profile selection, the socket loop, timers) and `main(argv)`.
- `session`: the sans-I/O session state machine (client event + clock in, server events out).
- `vad`, `asr`, `tts`, `dialogue`: the speech engine parts, each pure or explicitly stateful per call.
- `audio`: private G.711 / resampling helpers (to be deduplicated with `gateway/audio/` once it lands).
"""
