"""Issue 11 finding 2: the edge relays in-dialog requests only along routes it recorded, only across it
(carrier <-> worker), never to a third host, whatever the Route and R-URI of the request say."""

from __future__ import annotations

import time

import pytest
from kamailio_harness import sipp_uac, stop_all
from sip_tools import (
    EDGE_IP,
    SDP,
    STRANGER_IP,
    TRUNK_IP,
    VICTIM_IP,
    SilentListener,
    request,
    send,
    udp_socket,
)


@pytest.fixture
def victim():
    listener = SilentListener(VICTIM_IP)
    yield listener
    listener.close()


METHODS = ("INVITE", "INFO", "NOTIFY", "BYE", "UPDATE", "REFER")


def test_in_dialog_requests_from_a_trunk_reach_no_third_host(sec_edge, counting_workers, victim) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w])
    edge_route = f"<sip:{EDGE_IP}:{e.sip_port};lr>"
    target = f"sip:x@{VICTIM_IP}:{victim.port}"
    replies: dict[str, str | None] = {}
    with udp_socket(TRUNK_IP) as s:
        src = (TRUNK_IP, s.getsockname()[1])
        for method in METHODS:
            body = SDP.format(ip=TRUNK_IP) if method in ("INVITE", "UPDATE") else ""
            attempts = {
                # The attack: a Route naming the victim.
                "route_to_victim": request(method, target, src=src, to_tag="t1", body=body,
                                           route=f"<sip:{VICTIM_IP}:{victim.port};lr>"),
                # This edge as top Route, then the victim as next Route.
                "edge_then_victim": request(method, target, src=src, to_tag="t1", body=body,
                                            route=f"{edge_route}, <sip:{VICTIM_IP}:{victim.port};lr>"),
                # This edge as the only Route and the victim as R-URI (strict next hop after loose_route).
                "edge_route_victim_ruri": request(method, target, src=src, to_tag="t1", body=body,
                                                  route=edge_route),
                # No Route at all.
                "no_route": request(method, target, src=src, to_tag="t1", body=body),
            }
            for name, raw in attempts.items():
                replies[f"{method}/{name}"] = send(raw, e.sip_addr, src=s, timeout=2.0)
    time.sleep(1.0)
    assert victim.got == [], f"relayed to a third host: {victim.got[:1]}"
    for case, line in replies.items():
        assert line in ("SIP/2.0 403 Not Routed Here", "SIP/2.0 404 Not Here"), (case, line)
    assert w.received == []
    log = e.log()
    assert "relay refused: top Route is not this edge" in log
    assert "relay refused: next hop is not on the other side" in log


def test_a_worker_address_spoofed_on_the_public_side_is_a_stranger(sec_edge, counting_workers,
                                                                   victim) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w])
    with udp_socket(w.host) as s:
        src = (w.host, s.getsockname()[1])
        # A packet claiming to come from the worker, but sent to the carrier-facing socket: if it were
        # trusted as a worker, a new INVITE would go out to the carrier termination URI.
        line = send(request("INVITE", f"sip:+15559990000@{EDGE_IP}", src=src, body=SDP.format(ip=w.host)),
                    e.sip_addr, src=s, timeout=2.0)
    assert line == "SIP/2.0 403 Forbidden"
    assert victim.got == []


def test_real_calls_still_complete_and_hang_up_through_the_edge(sec_edge, sipp_workers) -> None:
    (w,) = sipp_workers(1)
    e = sec_edge([w])
    # Every call's ACK and BYE are in-dialog requests routed by the edge's Record-Route.
    stats = sipp_uac(e.workdir, "trunk", e.sip_target, calls=10, rate=10, hold_ms=100, host=TRUNK_IP)
    assert (stats.returncode, stats.successful, stats.failed) == (0, 10, 0)
    assert stop_all([w])[0].calls_answered == 10
    assert "relay refused" not in e.log()


def test_a_stranger_cannot_send_in_dialog_requests_at_all(sec_edge, counting_workers) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w])
    with udp_socket(STRANGER_IP) as s:
        src = (STRANGER_IP, s.getsockname()[1])
        raw = request("BYE", f"sip:fs@{w.host}:{w.port}", src=src, to_tag="t1",
                      route=f"<sip:{EDGE_IP}:{e.sip_port};lr>")
        assert send(raw, e.sip_addr, src=s, timeout=2.0) == "SIP/2.0 403 Forbidden"
    assert w.received == []
