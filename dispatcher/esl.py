"""Active-call counts of FreeSWITCH workers over ESL (the gateway's EslClient, one short connection)."""

from __future__ import annotations

import re

_CALLS_COUNT = re.compile(r"\A\s*(\d+) total\.\s*\Z")


class WorkerUnreachable(Exception):
    """The worker's event socket did not answer, refused the password or the command."""


def parse_calls_count(body: str) -> int:
    """`show calls count` body, exactly as FreeSWITCH 1.10 sends it: "\\n2 total.\\n"."""
    match = _CALLS_COUNT.match(body)
    if not match:
        raise ValueError(f"unexpected 'show calls count' reply: {body[:80]!r}")
    return int(match.group(1))


async def calls_count(host: str, port: int, password: str, *, io_timeout: float = 3.0) -> int:
    # Imported here so `dispatcher` without ESL (status --no-esl, add, remove) needs nothing else.
    try:
        from gateway.esl.client import EslClient
        from gateway.esl.errors import EslError
    except ImportError as exc:  # a partial install: say so instead of a traceback
        raise WorkerUnreachable(f"ESL client unavailable ({exc})") from exc

    client = EslClient(host, port, password, connect_timeout=io_timeout, command_timeout=io_timeout,
                       reconnect=False, events=(), custom=(), name=f"{host}:{port}")
    try:
        await client.connect()
        body = await client.api("show calls count")
        return parse_calls_count(body)
    except (EslError, OSError, ValueError) as exc:
        raise WorkerUnreachable(f"ESL {host}:{port}: {exc or type(exc).__name__}") from exc
    finally:
        await client.close()
