"""`gateway call`: a client that behaves like mod_audio_stream (used by the demo, tests and load tests)."""
