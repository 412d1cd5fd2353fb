"""Typed settings of `gateway serve`, read once at start-up from GATEWAY_* environment variables
(and an optional env file named by GATEWAY_ENV_FILE). An invalid value stops start-up with a message
naming the setting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.auth import AdminToken, is_loopback, parse_admin_tokens

DEFAULT_PROFILES_DIR = Path(__file__).parent / "profiles"
LOCAL_ENGINE_URL = "ws://127.0.0.1:8092/v1"
# Secrets that ship in public configs (freeswitch-conf/vars.xml, FreeSWITCH's own default): refused.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "cluecon"})


class Settings(BaseSettings):
    # hide_input_in_errors: a bad entry must not echo a secret (tokens, API key) into an error message.
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", env_file=None,
                                      hide_input_in_errors=True)

    # Media plane (mod_audio_stream connects here) and admin API (operators only: keep it on loopback).
    media_host: str = "0.0.0.0"
    media_port: int = Field(8090, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(8091, ge=0, le=65535)
    # Bearer tokens accepted from STREAM_EXTRA_HEADERS; several at once allow rotation. Comma-separated.
    # Empty = no authentication (logged loudly at start-up).
    auth_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Admin API bearer tokens, comma-separated `name:scope:secret` (scope metrics|read|control; see
    # gateway/auth.py). Required unless admin_host is a loopback address.
    admin_tokens: Annotated[list[AdminToken], NoDecode] = Field(default_factory=list, validate_default=True)

    # Media admission (gateway/admission.py): what one source address (one FreeSWITCH worker) may take.
    max_streams_per_source: int = Field(1000, ge=1)  # concurrent streams from one address
    stream_rate_per_source: float = Field(50.0, gt=0)  # new streams per second from one address...
    stream_burst_per_source: int = Field(100, ge=1)  # ...after a burst of this many
    upgrade_header_timeout_s: float = Field(5.0, gt=0)  # a connection must finish its upgrade request
    # What carries a media WebSocket after its 101 (gateway/media_raw.py): `aiohttp` (its WebSocketResponse)
    # or `raw` (RFC 6455 framing on the connection's asyncio.Protocol; docs/benchmarks.md, issue 17).
    # The HTTP side (routes, auth, admission, the 101) is aiohttp's either way.
    media_stack: Literal["aiohttp", "raw"] = "aiohttp"

    # Model: the embedded engine unless an OpenAI key is set. `model_url` is the SDK's websocket_base_url.
    model_backend: Literal["realtime", "null-echo", "null-silence"] = "realtime"
    model_url: str | None = None
    model_name: str = "gpt-realtime"
    openai_api_key: SecretStr | None = None
    model_connect_timeout_s: float = Field(5.0, gt=0)
    # Readiness follows the model: its host:port is probed (TCP connect) this often; 0 = never.
    model_probe_interval_s: float = Field(2.0, ge=0)
    model_probe_timeout_s: float = Field(1.0, gt=0)

    # Audio.
    playout_lead_ms: int = Field(60, ge=20, le=1000)  # audio kept in flight towards FreeSWITCH
    default_rate: int = 8000  # when a stream sends no metadata
    # How long an authenticated stream has to send its metadata (mod_audio_stream's first text frame,
    # Twilio's `start`) before it is refused (Twilio) or started with defaults (FreeSWITCH). 2 s, not
    # 0.5 s: behind a burst of other calls' set-up a `start` sent right after the 101 waited longer than
    # 0.5 s and Twilio callers were refused (docs/benchmarks.md); the peer is already authenticated.
    metadata_timeout_s: float = Field(2.0, gt=0)
    max_pending_input_ms: int = Field(2000, ge=0)  # caller audio kept while the model connects
    # Caller audio per input_audio_buffer.append towards the model: 20 = one per frame; more saves CPU
    # per call (fewer JSON messages and WebSocket frames) and delays the model's input by up to that
    # much less 20 ms (docs/benchmarks.md, issue 17).
    model_append_ms: int = Field(20, ge=20, le=100)

    # Agent profiles.
    profiles_dir: Path = DEFAULT_PROFILES_DIR
    default_profile: str = "front-desk"
    fallback_voice: str = "en-us"  # espeak-ng voice for the model-failure prompt

    # Lifecycle.
    shutdown_timeout_s: float = Field(30.0, ge=0)
    max_calls: int = Field(2000, ge=1)

    # Logs.
    log_level: str = "INFO"
    log_json: bool = False
    log_redact_pii: bool = False

    # Call control over ESL (gateway/call/control.py); JSON objects worker id -> "host:port:password".
    esl_workers: dict[str, str] = Field(default_factory=dict)
    playback_mode: dict[str, Literal["stream", "file"]] = Field(default_factory=dict)
    file_chunk_ms: int = Field(200, ge=20, le=2000)  # smallest audio per streamAudio message in file mode
    file_max_chunk_ms: int = Field(4000, ge=20, le=30000)  # largest: each file costs a ~100 ms gap

    # Caller transcription on the OpenAI Realtime path (`audio.input.transcription.model`); "" = off.
    input_transcription_model: str = "gpt-4o-mini-transcribe"

    # Call records (gateway/records/, docs/records.md). `records_url`: sqlite:///path/records.db or
    # postgresql://user:password@host:port/db; empty = no records.
    records_url: str = ""
    records_key: SecretStr | None = None  # HMAC key for pseudonymous caller keys
    records_max_buffered: int = Field(100_000, ge=100)  # ops kept while the store is down, then dropped
    records_webhook_url: str | None = None  # post-call record, signed with records_webhook_secret
    records_webhook_secret: SecretStr | None = None
    # The post-call summary written by the model (an out-of-band text response before the session closes):
    # unset = on when an OpenAI key is set (the embedded engine keeps the extractive one).
    records_model_summary: bool | None = None
    records_summary_timeout_s: float = Field(5.0, gt=0, le=60)  # then the extractive summary is kept
    # Handoffs (gateway/handoff/, docs/handoff.md): the secret that signs every profile's handoff webhook
    # (HMAC-SHA256 like the post-call webhook), and its retries (backoff doubles after each failure).
    handoff_webhook_secret: SecretStr | None = None
    handoff_webhook_attempts: int = Field(4, ge=1, le=10)
    handoff_webhook_backoff_s: float = Field(0.5, gt=0, le=60)
    # Post each Twilio call's turns (redacted) into its Twilio Conversation (ConversationSid parameter).
    records_twilio_conversations: bool = False
    # Twilio Media Streams ingress (off unless the auth token is set). `twilio_public_url` is the base
    # URL Twilio uses to reach this listener (https://host[:port]): signatures are computed over it.
    twilio_auth_token: SecretStr | None = None
    twilio_public_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_api_base_url: str | None = None  # tests point the official SDK at a local fake REST server

    # Outbound calls and tenants (gateway/outbound/, gateway/tenants.py, docs/outbound.md). Without a
    # tenants file everything below belongs to the one `default` tenant.
    tenants_file: Path | None = None
    # the numbers the default tenant may present as caller ID, comma-separated
    outbound_caller_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    outbound_max_concurrent: int = Field(5, ge=1, le=10000)  # per tenant
    outbound_queue_max_wait_s: float = Field(300.0, ge=0)  # then the queued call fails `queue_timeout`
    outbound_cps: float = Field(1.0, gt=0, le=1000)  # new calls per second on the trunk, all tenants
    outbound_ring_timeout_s: int = Field(30, ge=1, le=120)  # originate_timeout: then `no_answer`
    outbound_retry_attempts: int = Field(0, ge=0, le=10)  # extra attempts after busy / no answer
    outbound_retry_backoff_s: float = Field(60.0, ge=0)  # first wait; doubles each attempt
    outbound_calling_hours: str = ""  # "08:00-21:00" in the callee's time zone; "" = any time
    outbound_timezone: str = "UTC"  # the callee's zone when a request names none
    outbound_dnc_file: Path | None = None  # do-not-call list: one number per line, # comments
    outbound_webhook_url: str | None = None  # progress events of the default tenant, signed
    outbound_webhook_secret: SecretStr | None = None
    outbound_sip_gateway: str = "kamailio-edge"  # the sofia gateway (sip_profiles/kamailio.xml) to the edge
    outbound_twilio_stream_url: str | None = None  # wss://host/twilio/stream for <Connect><Stream>
    ladder_leg_timeout_s: float = Field(120.0, gt=0, le=600)  # per on-call leg, then the next person

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("outbound_caller_ids", mode="before")
    @classmethod
    def _split_caller_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @field_validator("outbound_calling_hours")
    @classmethod
    def _calling_hours(cls, value: str) -> str:
        from gateway.outbound.pacing import CallingHours

        CallingHours.parse(value, "UTC")
        return value

    @field_validator("outbound_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from gateway.outbound.pacing import zone

        zone(value)
        return value

    @field_validator("admin_tokens", mode="before")
    @classmethod
    def _parse_admin_tokens(cls, value: object, info: ValidationInfo) -> object:
        tokens = parse_admin_tokens(value) if isinstance(value, str) else value
        host = str(info.data.get("admin_host", "127.0.0.1"))
        if not tokens and not is_loopback(host):
            raise ValueError("required when the admin API listens beyond loopback "
                             f"(GATEWAY_ADMIN_HOST={host}): set name:scope:secret entries, or bind the "
                             "admin API to 127.0.0.1")
        return tokens

    @field_validator("auth_tokens")
    @classmethod
    def _no_placeholder_tokens(cls, tokens: list[str]) -> list[str]:
        for token in tokens:
            if token.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{token!r} is a placeholder from the shipped config: set a real token")
        return tokens

    @field_validator("esl_workers")
    @classmethod
    def _esl_passwords(cls, workers: dict[str, str]) -> dict[str, str]:
        from gateway.esl.client import parse_address

        for worker, spec in workers.items():
            try:
                _, _, password = parse_address(spec)
            except ValueError as exc:
                raise ValueError(f"worker {worker!r}: {exc}") from None
            if password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"worker {worker!r}: the ESL password is FreeSWITCH's public default")
        return workers

    @field_validator("default_rate")
    @classmethod
    def _rate(cls, value: int) -> int:
        if value not in (8000, 16000):
            raise ValueError("must be 8000 or 16000")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @model_validator(mode="after")
    def _model_url(self) -> Settings:
        if self.model_url is None and self.openai_api_key is None:
            self.model_url = LOCAL_ENGINE_URL
        return self

    @model_validator(mode="after")
    def _records(self) -> Settings:
        url = self.records_url
        if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("records_url must start with sqlite:/// or postgresql://")
        if self.records_twilio_conversations and not (self.twilio_account_sid and self.twilio_auth_token):
            raise ValueError("records_twilio_conversations needs twilio_account_sid and twilio_auth_token")
        if self.records_webhook_url and not self.records_webhook_secret:
            raise ValueError("records_webhook_url needs records_webhook_secret (deliveries are signed)")
        return self

    def api_key(self) -> str:
        # The embedded engine ignores the key, but the SDK refuses to connect without one.
        return self.openai_api_key.get_secret_value() if self.openai_api_key else "local-engine"


def load_settings(**overrides: object) -> Settings:
    env_file = os.environ.get("GATEWAY_ENV_FILE")
    if env_file:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    return Settings(**overrides)  # type: ignore[arg-type]
