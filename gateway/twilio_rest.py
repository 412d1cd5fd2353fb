"""The Twilio SDK's REST client as the gateway uses it: every request bounded in time, and one pooled
client per account and event loop for the calls' control verbs.

- A deadline on every request. The SDK's async HTTP client (`twilio.http.async_http_client`, twilio 9.x)
  hands aiohttp the `timeout` of the generated method, which is always None, and aiohttp reads an
  explicit None as "no deadline at all" (`ClientTimeout(total=None)`); the client's own `timeout` is
  only used by the synchronous client. A Twilio API that stopped answering would hold a transfer, a
  hangup or a warm transfer's conference step forever; here it fails after `REST_TIMEOUT_S` with
  `TimeoutError`, which the callers report as "Twilio API unreachable".
- One client per (account, token, API base URL) per event loop for the per-call control
  (gateway/call/twilio_control.py). A client per call opened its own aiohttp session (a connection
  pool and ~8 KB, docs/benchmarks.md) that nothing ever closed ("Unclosed client session" at exit).
  aiohttp sessions belong to the loop that made them, hence per loop (tests run several loops in one
  process); `close_shared()` closes the running loop's clients when the gateway stops.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

REST_TIMEOUT_S = 10.0


class BoundedHttpClient(AsyncTwilioHttpClient):
    """The SDK's async HTTP client with a deadline on every request (see the module's text)."""

    def __init__(self, timeout_s: float | None = None) -> None:
        super().__init__(timeout=timeout_s or REST_TIMEOUT_S)

    async def request(self, *args: Any, timeout: float | None = None,  # noqa: ASYNC109 - the SDK's
                      **kwargs: Any) -> Any:
        return await super().request(*args, timeout=timeout or self.timeout, **kwargs)


def new_client(account_sid: str, auth_token: str, base_url: str | None = None) -> Client:
    """A client of its own (the caller closes `client.http_client`): for long-lived users such as the
    outbound originator and the Conversations sync."""
    client = Client(account_sid, auth_token, http_client=BoundedHttpClient())
    if base_url:
        client.api.base_url = base_url.rstrip("/")
    return client


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, str | None], Client]] = (
    weakref.WeakKeyDictionary())


def shared_client(account_sid: str, auth_token: str, base_url: str | None = None) -> Client:
    """The running loop's client for this account (made on first use)."""
    per_loop = _SHARED.setdefault(asyncio.get_running_loop(), {})
    key = (account_sid, auth_token, base_url)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = new_client(account_sid, auth_token, base_url)
    return client


def preload() -> None:
    """Import at start-up the REST resources a Twilio call's control reaches on first use (the SDK loads
    its domains lazily: ~90 modules, ~80 ms of CPU and ~7 MB the first call would otherwise pay, outside
    `freeze_startup_heap`'s reach). A throwaway client: no request is made."""
    client = Client("AC" + "0" * 32, "preload")  # the SDK's sync HTTP client: no aiohttp session to close
    client.calls  # noqa: B018 - the attribute access loads the Api v2010 domain and its call resources
    client.conferences  # noqa: B018


async def close_shared() -> None:
    """Close the running loop's shared clients (at the gateway's shutdown)."""
    for client in _SHARED.pop(asyncio.get_running_loop(), {}).values():
        await client.http_client.close()
