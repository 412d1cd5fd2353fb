"""Optional: each turn of a Twilio call, redacted, posted as a Message into the Twilio Conversation the
call belongs to (its `ConversationSid` stream parameter), with the official `twilio` SDK:

    POST https://conversations.twilio.com/v1/Conversations/{ConversationSid}/Messages
         Author=caller|agent  Body=<the redacted turn>

(<https://www.twilio.com/docs/conversations/api/conversation-message-resource>).
Off by default (GATEWAY_RECORDS_TWILIO_CONVERSATIONS). Posting runs on a task per call, in order, never
on the media path; a failed post is logged and counted, and the call goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from twilio.rest import Client

from gateway.log import fields
from gateway.records import metrics as rm
from gateway.twilio_rest import new_client

log = logging.getLogger("gateway.records")
CLOSE_WAIT_S = 10.0
MAX_PENDING = 200  # turns waiting to be posted for one call; beyond that the oldest are dropped, counted


class ConversationSync:
    def __init__(self, account_sid: str, auth_token: str, base_url: str | None = None) -> None:
        self._client = new_client(account_sid, auth_token)  # requests bounded in time (twilio_rest.py)
        self._http = self._client.http_client
        if base_url:
            self._client.conversations.base_url = base_url.rstrip("/")

    async def close(self) -> None:
        await self._http.close()

    def open(self, conversation_sid: str, call_id: str) -> CallSync:
        return CallSync(self._client, conversation_sid, call_id)


class CallSync:
    def __init__(self, client: Client, conversation_sid: str, call_id: str) -> None:
        self._messages = client.conversations.v1.conversations(conversation_sid).messages
        self.call_id = call_id
        self._pending: deque[tuple[str, str]] = deque()
        self._task: asyncio.Task[None] | None = None

    def post(self, author: str, body: str) -> None:
        if not body:
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            rm.CONVERSATION_SYNC.labels(result="dropped").inc()
        self._pending.append((author, body))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"conversation-sync-{self.call_id}")

    async def _drain(self) -> None:
        while self._pending:
            author, body = self._pending.popleft()
            try:
                await self._messages.create_async(author=author, body=body)
                rm.CONVERSATION_SYNC.labels(result="ok").inc()
            except Exception as exc:  # Twilio down or refusing: the record in the store is unaffected
                rm.CONVERSATION_SYNC.labels(result="error").inc()
                log.warning("twilio conversation sync failed",
                            extra=fields(call=self.call_id, error=f"{type(exc).__name__}: {exc}"[:300]))

    async def close(self) -> None:
        """Wait (bounded) for the call's last turns to be posted."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=CLOSE_WAIT_S)
