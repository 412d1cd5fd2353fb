"""Typed settings of `gateway serve`, read once at start-up from GATEWAY_* environment variables
(and an optional env file named by GATEWAY_ENV_FILE). An invalid value stops start-up with a message
naming the setting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PROFILES_DIR = Path(__file__).parent / "profiles"
LOCAL_ENGINE_URL = "ws://127.0.0.1:8092/v1"
# Secrets that ship in public configs (freeswitch-conf/vars.xml, FreeSWITCH's own default): refused.
PLACEHOLDER_SECRETS = frozenset({"change-me", "changeme", "cluecon"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", env_file=None)

    # Media plane (mod_audio_stream connects here) and admin API (operators only: keep it on loopback).
    media_host: str = "0.0.0.0"
    media_port: int = Field(8090, ge=0, le=65535)
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(8091, ge=0, le=65535)
    # Bearer tokens accepted from STREAM_EXTRA_HEADERS; several at once allow rotation. Comma-separated.
    # Empty = no authentication (logged loudly at start-up).
    auth_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Model: the embedded engine unless an OpenAI key is set. `model_url` is the SDK's websocket_base_url.
    model_backend: Literal["realtime", "null-echo", "null-silence"] = "realtime"
    model_url: str | None = None
    model_name: str = "gpt-realtime"
    openai_api_key: SecretStr | None = None
    model_connect_timeout_s: float = Field(5.0, gt=0)

    # Audio.
    playout_lead_ms: int = Field(60, ge=20, le=1000)  # audio kept in flight towards FreeSWITCH
    default_rate: int = 8000  # when a stream sends no metadata
    metadata_timeout_s: float = Field(0.5, gt=0)  # how long to wait for the metadata frame
    max_pending_input_ms: int = Field(2000, ge=0)  # caller audio kept while the model connects

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

    # Twilio Media Streams ingress (off unless the auth token is set). `twilio_public_url` is the base
    # URL Twilio uses to reach this listener (https://host[:port]): signatures are computed over it.
    twilio_auth_token: SecretStr | None = None
    twilio_public_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_api_base_url: str | None = None  # tests point the official SDK at a local fake REST server

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

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

    def api_key(self) -> str:
        # The embedded engine ignores the key, but the SDK refuses to connect without one.
        return self.openai_api_key.get_secret_value() if self.openai_api_key else "local-engine"


def load_settings(**overrides: object) -> Settings:
    env_file = os.environ.get("GATEWAY_ENV_FILE")
    if env_file:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    return Settings(**overrides)  # type: ignore[arg-type]
