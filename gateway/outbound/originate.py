"""Placing one try of an outbound call.

SIP: FreeSWITCH `originate` over ESL `bgapi` on a worker (mod_commands,
https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_commands_1966741/#originate):

    originate {origination_uuid=<uuid>,origination_caller_id_number=<cid>,originate_timeout=<s>,
               ignore_early_media=true,ai_outbound_id=<id>,ai_tenant=<t>,ai_profile=<p>,ai_remote=<to>,
               ai_vars=<percent-encoded JSON>}sofia/gateway/kamailio-edge/<to> ai-outbound XML ai-gateway

The INVITE leaves through the worker's sofia gateway to the Kamailio edge, which routes it to the
carrier (kamailio-conf route[TO_CARRIER]). When the callee answers, FreeSWITCH runs the `ai-outbound`
extension (freeswitch-conf/dialplan/gateway.xml) on that channel: it starts the audio stream to a
gateway exactly like an inbound call's, so the agent (the profile's greeting first) talks to the callee.
Progress comes from the channel's events, watched from before the command is sent:
CHANNEL_PROGRESS(_MEDIA) = ringing, CHANNEL_ANSWER = answered, CHANNEL_HANGUP = the cause and
`variable_sip_term_status` (the callee's final SIP status, e.g. 486).

Every value goes through a strict pattern before it is written into the command: the dial string is
split by FreeSWITCH on spaces and commas, and `{}` variables end at `,` and `}`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from urllib.parse import quote, unquote

from gateway.esl.client import EslClient, Subscription
from gateway.esl.protocol import Event
from gateway.outbound.progress import parse_sip_status

NUMBER = re.compile(r"\+?[0-9*#]{2,32}")
CALLER_ID = re.compile(r"\+?[0-9]{2,32}")
PROFILE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
GATEWAY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
MAX_VARS = 32
MAX_VAR_CHARS = 256
MAX_VARS_ENCODED = 3000  # one channel variable; the stream metadata carries it too


class OriginateError(ValueError):
    """A value that cannot go into an originate command."""


def check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise OriginateError(f"{what} {value!r} is not allowed (expected {pattern.pattern})")
    return value


def encode_vars(variables: dict[str, str]) -> str:
    """Custom variables -> one percent-encoded JSON string (no space, comma, quote or brace survives)."""
    if len(variables) > MAX_VARS:
        raise OriginateError(f"at most {MAX_VARS} variables")
    clean = {}
    for name, value in variables.items():
        check(VAR_NAME, name, "variable name")
        text = str(value)
        if len(text) > MAX_VAR_CHARS or any(ord(c) < 32 for c in text):
            raise OriginateError(f"variable {name}: at most {MAX_VAR_CHARS} printable characters")
        clean[name] = text
    encoded = quote(json.dumps(clean, separators=(",", ":"), ensure_ascii=False), safe="")
    if len(encoded) > MAX_VARS_ENCODED:
        raise OriginateError("variables too long altogether")
    return encoded


def decode_vars(encoded: object) -> dict[str, str]:
    """The inverse of encode_vars, for the stream metadata; anything malformed is an empty dict."""
    if not isinstance(encoded, str) or not encoded or len(encoded) > MAX_VARS_ENCODED:
        return {}
    try:
        doc = json.loads(unquote(encoded))
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v)[:MAX_VAR_CHARS] for k, v in list(doc.items())[:MAX_VARS]}


def originate_command(*, uuid: str, to: str, caller_id: str, profile: str, tenant: str, outbound_id: str,
                      ring_timeout_s: int, variables: dict[str, str] | None = None,
                      sip_gateway: str = "kamailio-edge", extension: str = "ai-outbound",
                      context: str = "ai-gateway", extra_vars: dict[str, str] | None = None) -> str:
    """The `originate` API command for one try (without `bgapi`)."""
    check(_UUID, uuid, "channel uuid")
    check(_UUID, outbound_id, "outbound call id")
    check(NUMBER, to, "number")
    check(CALLER_ID, caller_id, "caller ID")
    check(PROFILE, profile, "profile")
    check(TENANT, tenant, "tenant")
    check(GATEWAY, sip_gateway, "sofia gateway")
    check(PROFILE, extension, "extension")
    check(PROFILE, context, "context")
    if not 1 <= ring_timeout_s <= 600:
        raise OriginateError("ring timeout must be 1..600 s")
    channel_vars = {
        "origination_uuid": uuid,
        "origination_caller_id_number": caller_id,
        "origination_caller_id_name": caller_id,
        "originate_timeout": str(ring_timeout_s),
        # Early media (183) is progress, not an answer: the agent starts only when the callee answers.
        "ignore_early_media": "true",
        "ai_outbound_id": outbound_id,
        "ai_tenant": tenant,
        "ai_profile": profile,
        "ai_remote": to,
        "ai_vars": encode_vars(variables or {}),
    }
    for name, value in (extra_vars or {}).items():
        check(VAR_NAME, name, "channel variable")
        check(re.compile(r"[A-Za-z0-9_.:+%-]{0,3000}"), value, f"channel variable {name}")
        channel_vars[name] = value
    body = ",".join(f"{k}={v}" for k, v in channel_vars.items())
    return f"originate {{{body}}}sofia/gateway/{sip_gateway}/{to} {extension} XML {context}"


class ChannelWatch:
    """Progress of one originated channel, from its ESL events (subscribed before the originate)."""

    def __init__(self, client: EslClient, uuid: str, on_change: Callable[[str], None]) -> None:
        self.uuid = uuid
        self.ringing = False
        self.answered = False
        self.hangup_cause: str | None = None
        self.sip_status: int | None = None
        self.digits: list[str] = []
        self.on_digit: Callable[[str], None] | None = None
        self._on_change = on_change
        self.ended = asyncio.Event()
        self.answered_event = asyncio.Event()
        self._sub: Subscription | None = client.subscribe(self._on_event, uuid)

    def _on_event(self, event: Event) -> None:
        name = event.name
        if name in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA") and not self.ringing and not self.answered:
            self.ringing = True
            self._on_change("ringing")
        elif name == "CHANNEL_ANSWER" and not self.answered:
            self.answered = True
            self.answered_event.set()
            self._on_change("answered")
        elif name == "DTMF":
            digit = event.get("DTMF-Digit")
            if digit:
                self.digits.append(digit)
                if self.on_digit is not None:
                    self.on_digit(digit)
        elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            status = parse_sip_status(event.get("variable_sip_term_status"))
            if status is None:
                proto = event.get("variable_proto_specific_hangup_cause") or ""
                if proto.startswith("sip:"):
                    status = parse_sip_status(proto[4:])
            if status is not None and self.sip_status is None:
                self.sip_status = status
            if self.hangup_cause is None:
                self.hangup_cause = event.get("Hangup-Cause") or "UNKNOWN"
            if name == "CHANNEL_HANGUP_COMPLETE":
                self.ended.set()

    def cancel(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None
