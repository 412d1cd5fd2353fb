"""Structured logging: static messages, fields in `extra={"fields": {...}}`, PII under marked keys.

    log.info("call started", extra=fields(call=uuid, caller=pii(number)))

`pii(value)` marks a value (caller numbers, DTMF, transcripts); with GATEWAY_LOG_REDACT_PII=true it is
written as "[redacted]". With GATEWAY_LOG_JSON=true every line is one JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class pii:  # noqa: N801 - reads as a marker at the call site: caller=pii(number)
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def fields(**kw: Any) -> dict[str, Any]:
    return {"fields": kw}


class _Base(logging.Formatter):
    def __init__(self, redact_pii: bool) -> None:
        super().__init__()
        self.redact_pii = redact_pii

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (getattr(record, "fields", None) or {}).items():
            if isinstance(value, pii):
                out[key] = "[redacted]" if self.redact_pii else value.value
            else:
                out[key] = value
        return out


class JsonFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(self._fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(_Base):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        parts = [f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"]
        parts += [f"{k}={json.dumps(v, default=str) if not isinstance(v, int | float) else v}"
                  for k, v in self._fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", *, json_lines: bool = False, redact_pii: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact_pii) if json_lines else TextFormatter(redact_pii))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (every HTTP request, every socket) drowns the per-call lines.
    for noisy in ("aiohttp.access", "uvicorn.access", "websockets", "openai", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
