"""Call control for Twilio Media Streams calls, through Twilio's REST API with the official SDK.

    hangup()                 POST Calls/{CallSid}.json  Status=completed
    transfer(target)         POST Calls/{CallSid}.json  Twiml=<Response><Dial>target</Dial></Response>
    escalate(...)            transfer to a sip: target with X-AI-* headers as URI parameters (Twilio
                             passes `X-` headers given that way, https://www.twilio.com/docs/voice/twiml/sip)
    add_participant(target)  POST Calls/{CallSid}.json  Twiml=<Dial><Conference>ai-{CallSid}</...>
                             POST Conferences/ai-{CallSid}/Participants.json  From, To=target

(https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource,
https://www.twilio.com/docs/voice/api/conference-participant-resource). Errors become
`CallControlError` kinds like the FreeSWITCH verbs'. `GATEWAY_TWILIO_API_BASE_URL` points the SDK
elsewhere (the tests' local fake).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from gateway.call.control import CallControlError, ErrorKind, header_text
from gateway.log import fields, pii
from gateway.twilio_rest import shared_client

log = logging.getLogger("gateway.twilio")

_TARGET = re.compile(r"(\+?[0-9]{3,20}|sips?:[^\s;,'\"<>&]{3,200})")


class TwilioControl:
    def __init__(self, call_sid: str, *, account_sid: str, auth_token: str, base_url: str | None = None,
                 caller_id: str = "") -> None:
        self.uuid = call_sid
        self.caller_id = caller_id
        # The process's client for this account (gateway/twilio_rest.py): pooled, every request bounded.
        self._client = shared_client(account_sid, auth_token, base_url)
        self.conference: str | None = None
        self.released = False

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        await self._call(lambda: self._client.calls(self.uuid).update_async(status="completed"), "hangup")

    async def transfer(self, target: str, headers: dict[str, str] | None = None) -> None:
        target = self._target(target)
        if headers and target.startswith("sip"):
            target += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in headers.items())
        response = VoiceResponse()
        dial = Dial()
        if target.startswith("sip"):
            dial.sip(target)
        else:
            dial.number(target)
        response.append(dial)
        await self._call(lambda: self._client.calls(self.uuid).update_async(twiml=str(response)), "transfer")
        log.info("call transferred", extra=fields(call=self.uuid, target=pii(target)))

    async def escalate(self, target: str, reason: str, urgency: str, summary: str) -> None:
        await self.transfer(target, {"X-AI-Reason": header_text(reason, 200) or "unspecified",
                                     "X-AI-Urgency": header_text(urgency, 20) or "normal",
                                     "X-AI-Summary": header_text(summary, 600) or "none"})

    async def add_participant(self, target: str) -> None:
        target = self._target(target)
        name = f"ai-{self.uuid}"
        if self.conference is None:
            response = VoiceResponse()
            dial = Dial()
            dial.conference(name)
            response.append(dial)
            await self._call(lambda: self._client.calls(self.uuid).update_async(twiml=str(response)),
                             "conference")
            self.conference = name
        await self._call(lambda: self._client.conferences(name).participants.create_async(
            from_=self.caller_id or "+10000000000", to=target), "add_participant")

    def release(self) -> None:
        self.released = True

    @property
    def rest(self) -> Client:
        """The SDK client (gateway/handoff/twilio_warm.py drives conferences with it)."""
        return self._client

    async def request(self, request, verb: str):  # type: ignore[no-untyped-def]
        """Run one SDK request (`lambda: client....create_async(...)`), errors as CallControlError."""
        return await self._call(request, verb)

    def _target(self, target: str) -> str:
        target = target.strip()
        if not _TARGET.fullmatch(target):
            raise CallControlError(f"not a phone number or sip: URI: {target!r}", kind=ErrorKind.INVALID)
        return target

    async def _call(self, request, verb: str):  # type: ignore[no-untyped-def]
        try:
            return await request()
        except TwilioRestException as exc:
            kind = ErrorKind.INVALID if exc.status == 400 else ErrorKind.REFUSED
            log.warning("twilio refused", extra=fields(call=self.uuid, verb=verb, status=exc.status,
                                                       error=str(exc.msg)[:200]))
            raise CallControlError(f"Twilio refused {verb}: {exc.msg}", kind=kind,
                                   reply=str(exc.msg)) from None
        except TwilioException as exc:
            raise CallControlError(f"Twilio: {exc}", kind=ErrorKind.REFUSED) from None
        except (OSError, TimeoutError) as exc:
            raise CallControlError(f"Twilio API unreachable: {exc}", kind=ErrorKind.UNREACHABLE) from None
