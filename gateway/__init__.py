"""AI voice SIP gateway: the media plane between FreeSWITCH's mod_audio_stream and a Realtime model."""

__version__ = "0.1.0"
