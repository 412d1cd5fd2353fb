"""FreeSWITCH Event Socket: sans-I/O protocol core (`protocol`), API command builders (`commands`),
typed errors (`errors`) and the asyncio client (`client`)."""

from gateway.esl.client import EslClient, Subscription, parse_address
from gateway.esl.errors import (
    EslArgumentError,
    EslAuthError,
    EslCommandError,
    EslConnectionError,
    EslError,
    EslProtocolError,
    EslTimeout,
)
from gateway.esl.protocol import EslParser, Event

__all__ = [
    "EslArgumentError",
    "EslAuthError",
    "EslClient",
    "EslCommandError",
    "EslConnectionError",
    "EslError",
    "EslParser",
    "EslProtocolError",
    "EslTimeout",
    "Event",
    "Subscription",
    "parse_address",
]
