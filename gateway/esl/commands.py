"""Builders for the FreeSWITCH API command lines the gateway sends (the text after `api `/`bgapi `).

Pure functions: each returns one command string exactly as FreeSWITCH's mod_commands / mod_conference
/ mod_audio_stream parse it (mod_commands:
https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Modules/mod_commands_1966741/;
mod_audio_stream: https://github.com/amigniter/mod_audio_stream#readme). Arguments are checked
so a value from a model tool call or an HTTP request can never split into extra arguments or inject a
second ESL command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.esl.errors import EslArgumentError
from gateway.esl.protocol import _line, _token

# FreeSWITCH channel UUIDs are RFC 4122 text, but origination_uuid lets an operator pick any string;
# accept the usual UUID alphabet and nothing that could be an argument separator.
_UUID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# Hangup causes are Q.850 names in FreeSWITCH's spelling (switch_channel_str2cause).
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
# sip_h_X-... header names: RFC 3261 token characters.
_SIP_HEADER_NAME = re.compile(r"X-[A-Za-z0-9!%*_+`'~.-]{1,64}")
# A conference name: FreeSWITCH splits `name@profile+flags{...}` on those characters.
_CONFERENCE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MEMBER = re.compile(r"[0-9]{1,9}|all|last|non_moderator")


def uuid(value: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise EslArgumentError(f"not a channel UUID: {value!r}")
    return value


def cause(value: str) -> str:
    if not _CAUSE.fullmatch(value):
        raise EslArgumentError(f"not a hangup cause name: {value!r}")
    return value


def conference_name(value: str) -> str:
    if not _CONFERENCE.fullmatch(value):
        raise EslArgumentError(f"conference name must match {_CONFERENCE.pattern}: {value!r}")
    return value


def uuid_kill(channel: str, hangup_cause: str = "NORMAL_CLEARING") -> str:
    return f"uuid_kill {uuid(channel)} {cause(hangup_cause)}"


def uuid_broadcast(channel: str, path: str, leg: str = "aleg") -> str:
    """Queue a file on the channel; FreeSWITCH plays queued broadcasts in order."""
    if leg not in ("aleg", "bleg", "holdb", "both"):
        raise EslArgumentError(f"broadcast leg must be aleg|bleg|holdb|both, not {leg!r}")
    return f"uuid_broadcast {uuid(channel)} {_token(path, what='playback path')} {leg}"


def uuid_displace(channel: str, action: str, path: str) -> str:
    """`start`: play `path` into what the caller hears as a media bug, beside whatever the channel runs
    (no application switch, so files started back to back leave no gap); `stop`: end it early."""
    if action not in ("start", "stop"):
        raise EslArgumentError(f"displace action must be start|stop, not {action!r}")
    tail = " 0 mux" if action == "start" else ""
    return f"uuid_displace {uuid(channel)} {action} {_token(path, what='playback path')}{tail}"


def uuid_break(channel: str, flush_all: bool = True) -> str:
    """`all` also drops the queued broadcasts, which is what barge-in needs."""
    return f"uuid_break {uuid(channel)}" + (" all" if flush_all else "")


def uuid_transfer(channel: str, destination: str, dialplan: str = "XML", context: str | None = None) -> str:
    """Blind transfer to a dialplan extension (`uuid_transfer <uuid> <dest> [<dialplan>] [<context>]`)."""
    cmd = f"uuid_transfer {uuid(channel)} {_token(destination, what='transfer destination')}"
    cmd += f" {_token(dialplan, what='dialplan')}"
    if context:
        cmd += f" {_token(context, what='context')}"
    return cmd


def uuid_transfer_inline(channel: str, applications: list[tuple[str, str]]) -> str:
    """Transfer into an inline dialplan: `uuid_transfer <uuid> 'm:^:app:arg^app2:arg2' inline`.

    The `m:^:` prefix makes `^` the separator so arguments may hold commas (bridge dial strings do);
    the whole list is one single-quoted token, so it may not contain quotes, backslashes or `^` itself.
    """
    parts = []
    for app, arg in applications:
        _token(app, what="inline application")
        if any(c in arg for c in "'\\^") or _line(arg, what="inline argument") != arg:
            raise EslArgumentError(f"inline argument may not contain quotes, backslashes or '^': {arg!r}")
        parts.append(f"{app}:{arg}" if arg else app)
    return f"uuid_transfer {uuid(channel)} 'm:^:{'^'.join(parts)}' inline"


def uuid_deflect(channel: str, sip_uri: str) -> str:
    """SIP REFER the caller to `sip_uri` (the carrier does the transfer; needs an answered call)."""
    if not sip_uri.startswith(("sip:", "sips:", "tel:")):
        raise EslArgumentError(f"deflect target must be a sip:, sips: or tel: URI, not {sip_uri!r}")
    return f"uuid_deflect {uuid(channel)} {_token(sip_uri, what='deflect URI')}"


def uuid_setvar(channel: str, name: str, value: str | None = None) -> str:
    cmd = f"uuid_setvar {uuid(channel)} {_token(name, what='variable name')}"
    if value is not None:
        # The value is the rest of the line (argv's last slot), so spaces are kept; line breaks and the
        # characters switch_separate_string consumes are not.
        if any(c in value for c in "'\\\"") or _line(value, what="variable value") != value:
            raise EslArgumentError(f"variable value may not contain quotes or backslashes: {value[:60]!r}")
        cmd += f" {value}"
    return cmd


def uuid_record(channel: str, action: str, path: str, limit_seconds: int | None = None) -> str:
    if action not in ("start", "stop", "mask", "unmask"):
        raise EslArgumentError(f"record action must be start|stop|mask|unmask, not {action!r}")
    cmd = f"uuid_record {uuid(channel)} {action} {_token(path, what='recording path')}"
    if limit_seconds is not None:
        if limit_seconds <= 0:
            raise EslArgumentError("recording limit must be positive")
        cmd += f" {int(limit_seconds)}"
    return cmd


def uuid_audio_stream_stop(channel: str) -> str:
    return f"uuid_audio_stream {uuid(channel)} stop"


def conference_dial(
    name: str, endpoint: str, cid_number: str, cid_name: str, variables: Mapping[str, str] | None = None
) -> str:
    """`conference <name> bgdial <endpoint> <cid_num> <cid_name>`: the dial string is one token.

    bgdial, not dial: `dial` blocks for up to 60 s on the listener thread and stalls every event of
    the worker (§2.5); bgdial answers at once and reports through conference::maintenance.
    """
    dial = _token(endpoint, what="dial string")
    if variables:
        pairs = ",".join(
            f"{_token(k, what='variable name')}={_token(v, what='variable value')}"
            for k, v in variables.items()
        )
        dial = "{" + pairs + "}" + dial
    return (
        f"conference {conference_name(name)} bgdial {dial} {_token(cid_number, what='caller id number')} "
        f"{_token(cid_name, what='caller id name')}"
    )


def conference_relate(name: str, member: str, others: str, mode: str) -> str:
    """`relate A B nospeak`: B stops hearing A (§2.9); `clear` removes the relationship."""
    if mode not in ("nospeak", "nohear", "clear"):
        raise EslArgumentError(f"relate mode must be nospeak|nohear|clear, not {mode!r}")
    for ids in (member, others):
        if not all(_MEMBER.fullmatch(part) for part in ids.split(",")):
            raise EslArgumentError(f"not a member id list: {ids!r}")
    return f"conference {conference_name(name)} relate {member} {others} {mode}"


def conference_kick(name: str, member: str) -> str:
    if not _MEMBER.fullmatch(member):
        raise EslArgumentError(f"not a member id: {member!r}")
    return f"conference {conference_name(name)} kick {member}"


def conference_list(name: str) -> str:
    return f"conference {conference_name(name)} list"


def sip_header_variable(name: str) -> str:
    """`X-AI-Reason` -> `sip_h_X-AI-Reason`: sofia copies `sip_h_*` variables into outgoing INVITEs."""
    if not _SIP_HEADER_NAME.fullmatch(name):
        raise EslArgumentError(f"custom SIP header names must start with X- and be a SIP token: {name!r}")
    return f"sip_h_{name}"


def show_calls_count() -> str:
    return "show calls count"


def parse_calls_count(body: str) -> int:
    """`show calls count` answers `\\n<N> total.\\n` (fixtures/api_show_calls_count*.txt)."""
    match = re.fullmatch(r"\s*(\d+) total\.\s*", body)
    if not match:
        raise ValueError(f"unexpected 'show calls count' reply: {body[:80]!r}")
    return int(match.group(1))
