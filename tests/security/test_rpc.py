"""Issue 11 finding 3: Kamailio's JSON-RPC (117 methods, no credential) is not reachable over the network
by default; over HTTP it is opt-in and refused to any other source, socket or path."""

from __future__ import annotations

import os
import stat

import httpx
import pytest
from sip_tools import EDGE_IP, STRANGER_IP, TRUNK_IP

ATTACKS = [("dispatcher.set_state", ["ip", 1, None]), ("htable.flush", ["ipban"]), ("core.kill", [])]


def post_from(src: str, url: str, method: str, params: list, timeout: float = 3) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=src)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        return client.post(url, json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1})


def worker_uri(e) -> str:
    return e.workers[0].uri


def test_no_json_rpc_over_the_network_by_default(sec_edge, counting_workers) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w])
    assert e.wait_flags(worker_uri(e), "AP", timeout=10) == "AP"
    for src in (STRANGER_IP, TRUNK_IP, EDGE_IP):
        for method, params in ATTACKS:
            params = [worker_uri(e) if p is None else p for p in params]
            # Nothing listens on the RPC port.
            with pytest.raises(httpx.ConnectError):
                post_from(src, e.http_rpc_url, method, params)
    # The SIP TCP port does not speak JSON-RPC (Kamailio drops what is not SIP: a timeout or a close).
    try:
        reply = post_from(TRUNK_IP, f"http://{EDGE_IP}:{e.sip_port}/RPC", "core.kill", [], timeout=1)
        assert '"result"' not in reply.text
    except httpx.HTTPError:
        pass
    assert e.alive()
    assert e.worker_flags()[worker_uri(e)] == "AP"
    # The UNIX socket is the way in, guarded by file permissions: no access for "others".
    mode = os.stat(e.rpc_socket).st_mode
    assert stat.S_ISSOCK(mode) and mode & 0o007 == 0
    assert "uptime" in e.rpc("core.uptime")


def test_http_json_rpc_is_opt_in_and_refused_to_other_sources(sec_edge, counting_workers) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w], defines={"WITH_HTTP_RPC": None, "RPC_ALLOW_SUBNET": f'"{TRUNK_IP}/32"'})
    assert e.wait_flags(worker_uri(e), "AP", timeout=10) == "AP"
    for method, params in ATTACKS:
        params = [worker_uri(e) if p is None else p for p in params]
        reply = post_from(STRANGER_IP, e.http_rpc_url, method, params)
        assert reply.status_code == 403 and '"result"' not in reply.text
    assert e.alive()
    assert e.worker_flags()[worker_uri(e)] == "AP"
    # The one allowed source is served.
    reply = post_from(TRUNK_IP, e.http_rpc_url, "core.uptime", [])
    assert "uptime" in reply.json()["result"]
