"""Settings of `gateway model`: environment `GATEWAY_ENGINE_*`, then command-line flags on top."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_CHARS = 16  # a bearer token is a secret, not a word: refuse anything guessable at a glance


def is_loopback(host: str) -> bool:
    """True when `host` can only be reached from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: assume it is reachable from elsewhere


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_ENGINE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8092, ge=0, le=65535)
    # Accepted bearer tokens (`Authorization: Bearer <token>`), separated by commas or spaces: several
    # at once so a token can be rotated without dropping calls (add the new one, move the clients,
    # remove the old one). Required when `host` is not a loopback address. When none is set (loopback
    # only) any bearer is accepted: the SDK always sends one, so the gateway's dummy key works.
    tokens: str = ""
    token: str | None = None  # one more accepted token (the older single-token setting)
    default_profile: str = "front-desk"
    # Shared with the gateway: GATEWAY_PROFILES_DIR (GATEWAY_ENGINE_PROFILES_DIR wins if both are set).
    profiles_dir: Path | None = Field(
        None, validation_alias=AliasChoices("GATEWAY_ENGINE_PROFILES_DIR", "GATEWAY_PROFILES_DIR")
    )
    # Output audio is sent as `chunk_ms` deltas, the first `lead_ms` at once and the rest at `pace` x real
    # time (0 = all at once). Real time keeps a response "in progress" while it plays, so barge-in can
    # cancel it, and keeps the gateway's playout buffer small.
    chunk_ms: int = Field(100, ge=20, le=1000)
    lead_ms: int = Field(300, ge=0, le=10_000)
    pace: float = Field(1.0, ge=0.0, le=100.0)
    max_sessions: int = Field(500, ge=1)
    # Largest client message. 1 MiB holds ~16 s of 24 kHz PCM or ~98 s of G.711 in one append; the
    # gateway sends 20-100 ms per append. Larger messages are refused before they are read.
    max_message_bytes: int = Field(1024 * 1024, ge=64 * 1024, le=16 * 1024 * 1024)
    # Nesting depth of a client event's JSON; the deepest real event (a tool schema) needs far fewer.
    max_json_depth: int = Field(64, ge=8, le=512)
    # Processes that run speech recognition, so that decoding never blocks the event loop. 0 = decode
    # in the event loop's process, in a thread (for tests and one-call debugging).
    asr_workers: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)), ge=0, le=64)
    log_level: str = "INFO"

    @property
    def accepted_tokens(self) -> list[str]:
        found = [t for t in self.tokens.replace(",", " ").split() if t]
        if self.token:
            found.append(self.token)
        return list(dict.fromkeys(found))

    @model_validator(mode="after")
    def _tokens_where_needed(self) -> EngineSettings:
        for t in self.accepted_tokens:
            if len(t) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"GATEWAY_ENGINE_TOKENS: every token must have at least {MIN_TOKEN_CHARS} characters"
                )
        if not self.accepted_tokens and not is_loopback(self.host):
            raise ValueError(
                f"GATEWAY_ENGINE_TOKENS (or --token) is required when GATEWAY_ENGINE_HOST ({self.host!r}) "
                "is not a loopback address: without it anyone who reaches the port could use the engine"
            )
        return self
