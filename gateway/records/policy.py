"""A profile's `records:` block: what is kept, how it is redacted, what is remembered and for how long.

records:
  store: true               # write this profile's calls to the record store
  retention_days: 90        # records and memory older than this are deleted by the retention job
  redaction:                # gateway/records/redact.py
    kinds: [phone, dob, card, ssn, email, address, mrn]
    keep_last4: [phone, card]
  memory:
    mode: on                # off | on
    turns: 6                # last N turns carried into the next call
    max_chars: 1200         # cap on what is added to the instructions
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.records.redact import RedactionPolicy


class MemoryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["off", "on"] = "off"
    turns: int = Field(6, ge=0, le=50)
    max_chars: int = Field(1200, ge=0, le=20000)


class RecordsPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    store: bool = True
    retention_days: int | None = Field(None, ge=1)
    redaction: RedactionPolicy = Field(default_factory=RedactionPolicy)
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
