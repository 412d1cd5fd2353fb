"""Outbound calls through Twilio's REST API (no SIP trunk): `calls.create` with TwiML that connects the
answered call to this gateway's Twilio Media Streams listener (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource,
https://www.twilio.com/docs/voice/twiml/stream):

    POST /2010-04-01/Accounts/{AccountSid}/Calls.json  To, From, Timeout,
         Twiml=<Response><Connect><Stream url="wss://gateway/twilio/stream">
                  <Parameter name="profile" .../> caller, called, direction, tenant, vars
               </Stream></Connect></Response>

Progress: the Call resource's `status` (queued, ringing, in-progress, then completed, busy, no-answer,
failed, canceled), polled with `calls(sid).fetch()` (a status callback needs a public URL this
gateway may not have; polling a few calls a second is well within Twilio's API limits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.twiml.voice_response import Connect, VoiceResponse

from gateway.log import fields, pii
from gateway.outbound.originate import encode_vars
from gateway.outbound.progress import OutboundCall
from gateway.twilio_rest import new_client

log = logging.getLogger("gateway.outbound.twilio")

STATE = {"queued": "dialing", "initiated": "dialing", "ringing": "ringing", "in-progress": "answered",
         "completed": "completed", "busy": "busy", "no-answer": "no_answer", "failed": "failed",
         "canceled": "canceled"}
FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def stream_twiml(stream_url: str, call: OutboundCall) -> str:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (("profile", call.profile), ("caller", call.to), ("called", call.caller_id),
                        ("direction", "outbound"), ("tenant", call.tenant),
                        ("vars", encode_vars(call.variables))):
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


class TwilioOriginator:
    def __init__(self, *, account_sid: str, auth_token: str, stream_url: str, ring_timeout_s: int,
                 base_url: str | None = None, poll_s: float = 1.0,
                 on_progress: Callable[[OutboundCall, str], None] | None = None) -> None:
        # Requests bounded in time (gateway/twilio_rest.py).
        self._client = new_client(account_sid, auth_token, base_url)
        self.stream_url = stream_url
        self.ring_timeout_s = ring_timeout_s
        self.poll_s = poll_s
        self.on_progress = on_progress

    async def __call__(self, call: OutboundCall) -> str:
        try:
            created = await self._client.calls.create_async(
                to=call.to, from_=call.caller_id, twiml=stream_twiml(self.stream_url, call),
                timeout=self.ring_timeout_s)
        except TwilioRestException as exc:
            call.reason = f"Twilio refused the call: {exc.msg}"
            call.sip_status = None
            log.warning("twilio refused an outbound call", extra=fields(call=call.id, status=exc.status,
                                                                        to=pii(call.to)))
            return "failed"
        except (TwilioException, OSError, TimeoutError) as exc:
            call.reason = f"Twilio API unreachable: {exc}"
            return "failed"
        call.uuid = created.sid
        status = created.status or "queued"
        seen = None
        while True:
            if status != seen:
                seen = status
                state = STATE.get(status, "dialing")
                if state in ("ringing", "answered") and self.on_progress is not None:
                    self.on_progress(call, state)
            if status in FINAL:
                break
            await asyncio.sleep(self.poll_s)
            try:
                status = (await self._client.calls(created.sid).fetch_async()).status or status
            except (TwilioException, OSError, TimeoutError) as exc:
                log.warning("twilio call status unavailable",
                            extra=fields(call=call.id, error=str(exc)[:200]))
        call.hangup_cause = status
        if status == "completed" and call.answered_at is None:
            return "failed"  # completed without ever being answered: Twilio's own failure wording varies
        return STATE[status]

    async def close(self) -> None:
        http = self._client.http_client
        if isinstance(http, AsyncTwilioHttpClient):
            await http.close()

    async def hangup(self, call: OutboundCall) -> None:
        if not call.uuid:
            return
        status = "completed" if call.answered_at else "canceled"
        try:
            await self._client.calls(call.uuid).update_async(status=status)
        except (TwilioException, OSError, TimeoutError) as exc:
            log.warning("twilio hangup failed", extra=fields(call=call.id, error=str(exc)[:200]))
