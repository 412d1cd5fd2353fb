"""Settings of the `dispatcher` tool: environment variables prefixed DISPATCHER_, CLI flags win."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DispatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHER_", extra="ignore", env_file=None)

    # kamailio.cfg RPC_SOCKET (jsonrpcs over a UNIX datagram socket, the default), or
    # http://RPC_ADDR:RPC_PORT/RPC when the edge runs WITH_HTTP_RPC.
    rpc_url: str = "unix:/run/kamailio/kamailio_rpc.sock"
    rpc_timeout: float = Field(5.0, gt=0)
    # The file Kamailio loads (kamailio.cfg DISPATCHER_LIST); add/remove rewrite it, drain/enable persist
    # the admin-disabled flag in it when it exists here.
    list_file: Path = Path("/etc/kamailio/dispatcher.list")
    # kamailio.cfg DS_SET.
    setid: int = 1
    # kamailio.cfg DS_RELOAD_DELTA: Kamailio refuses a second reload within this many seconds.
    reload_delta: float = Field(5.0, ge=0)
    # ESL of each worker: attrs "esl=host:port" in dispatcher.list, else <uri host>:esl_port.
    esl_port: int = Field(8021, ge=1, le=65535)
    # No default: the dispatcher refuses to ask a worker without one (never FreeSWITCH's ClueCon).
    esl_password: str = ""
    esl_timeout: float = Field(3.0, gt=0)
    # Same shape as the gateway's GATEWAY_ESL_WORKERS: {"fs1": "10.0.0.11:8021:secret"}; wins over attrs.
    esl_workers: dict[str, str] = {}
    # drain --wait: how often to ask FreeSWITCH for its session count.
    poll_interval: float = Field(1.0, gt=0)

    @field_validator("rpc_url")
    @classmethod
    def _rpc_url(cls, value: str) -> str:
        if value.startswith("unix:/") or value.startswith(("http://", "https://")):
            return value
        raise ValueError("expected unix:/path/to/kamailio_rpc.sock or http://host:port/RPC")
