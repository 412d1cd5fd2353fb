"""Typed errors of the Event Socket layer.

Everything the ESL code raises derives from `EslError`, so a caller that only wants "the FreeSWITCH
worker could not do it" catches one class; the subclasses say why (bad bytes on the wire, a refused
command, a dead connection, a timeout) so logs and HTTP status codes can tell them apart.
"""

from __future__ import annotations


class EslError(Exception):
    """Base class of every ESL failure."""


class EslProtocolError(EslError):
    """FreeSWITCH (or whatever answered on the ESL port) sent bytes that do not frame as ESL.

    The connection is unusable after this: the client drops it and reconnects.
    """


class EslHeaderTooLarge(EslProtocolError):
    """A header block grew past `MAX_HEADER_BYTES` without its terminating blank line."""


class EslFrameTooLarge(EslProtocolError):
    """A `Content-Length` announced more than `MAX_FRAME_BYTES`."""


class EslMalformedFrame(EslProtocolError):
    """A header line without a colon, or a `Content-Length` that is not a decimal byte count."""


class EslArgumentError(EslError, ValueError):
    """A command argument would change the meaning of the command on the wire.

    ESL frames end at a blank line and FreeSWITCH splits API arguments on spaces, so a newline in an
    argument could inject a second command and a space could shift the arguments. Builders refuse both.
    """


class EslConnectionError(EslError, ConnectionError):
    """No authenticated connection to the worker (refused, dropped, or closed by us)."""


class EslAuthError(EslConnectionError):
    """FreeSWITCH answered `auth` with `-ERR invalid` (wrong password) or refused us by ACL."""


class EslTimeout(EslError, TimeoutError):
    """No reply (or no BACKGROUND_JOB result) within the allowed time."""


class EslCommandError(EslError):
    """FreeSWITCH refused a command: its `-ERR ...` / `-USAGE: ...` text is kept verbatim.

    `reply` is the text without the trailing newline, e.g. `-ERR No such channel!`.
    """

    def __init__(self, command: str, reply: str) -> None:
        self.command = command
        self.reply = reply.rstrip("\n")
        super().__init__(self.reply)

    @property
    def reason(self) -> str:
        """The refusal without its `-ERR ` prefix, for messages spoken or shown to people."""
        text = self.reply
        for prefix in ("-ERR ", "-USAGE: ", "-ERR", "-USAGE:"):
            if text.startswith(prefix):
                return text[len(prefix) :].strip() or text
        return text
