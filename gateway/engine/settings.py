"""Settings of `gateway model`: environment `GATEWAY_ENGINE_*`, then command-line flags on top."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_ENGINE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8092, ge=0, le=65535)
    # When set, clients must send `Authorization: Bearer <token>`; when empty any bearer is accepted
    # (the SDK always sends one, so the gateway's dummy key works).
    token: str | None = None
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
    # Normalised phone distance above which an utterance is "none of the profile's phrases".
    reject_above: float = Field(0.65, gt=0.0, le=1.0)
    max_sessions: int = Field(500, ge=1)
    log_level: str = "INFO"
