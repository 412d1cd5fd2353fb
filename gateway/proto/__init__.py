"""Sans-I/O protocol cores: mod_audio_stream wire format and Realtime event mapping."""
