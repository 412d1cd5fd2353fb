"""Issue 11 finding 4: idle TCP connections from a stranger cannot hold the edge's TCP listener.

Every connection starts with TCP_IDLE_LIFETIME; only a trunk or worker that sends a valid request on it
earns TCP_TRUSTED_LIFETIME. A stranger's request gets its 403 and the connection is closed with it.
"""

from __future__ import annotations

import select
import socket
import time

from kamailio_harness import sipp_uac
from sip_tools import EDGE_IP, STRANGER_IP, TCP_ATTACKER_IP, TRUNK_IP

IDLE = 3  # TCP_IDLE_LIFETIME for these tests (default 10 s)
STRANGER_CONNECTIONS = 400


def options_over(conn: socket.socket, src_port: int, n: int) -> bytes:
    host = conn.getsockname()[0]
    conn.sendall((f"OPTIONS sip:{EDGE_IP} SIP/2.0\r\n"
                  f"Via: SIP/2.0/TCP {host}:{src_port};branch=z9hG4bKtcp{n}\r\n"
                  f"From: <sip:trunk@{host}>;tag=t{n}\r\nTo: <sip:{EDGE_IP}>\r\n"
                  f"Call-ID: tcp-{n}-{src_port}\r\n"
                  f"CSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    conn.settimeout(5)
    return conn.recv(65535).split(b"\r\n", 1)[0]


def closed_by_peer(conns: list[socket.socket]) -> list[socket.socket]:
    """Those of conns the edge has closed (readable with EOF, or reset)."""
    closed = []
    readable, _, _ = select.select(conns, [], [], 0)
    for c in readable:
        try:
            if c.recv(1) == b"":
                closed.append(c)
        except OSError:
            closed.append(c)
    return closed


def test_idle_stranger_connections_are_closed_while_trunk_calls_over_tcp_succeed(sec_edge,
                                                                                   sipp_workers) -> None:
    (w,) = sipp_workers(1)
    e = sec_edge([w], defines={"TCP_IDLE_LIFETIME": IDLE})
    idle: list[socket.socket] = []
    try:
        for _ in range(STRANGER_CONNECTIONS):
            c = socket.socket()
            c.bind((TCP_ATTACKER_IP, 0))
            c.settimeout(2)
            c.connect(e.sip_addr)
            idle.append(c)
        trunk = sipp_uac(e.workdir, "trunk-tcp", e.sip_target, calls=40, rate=10, hold_ms=200,
                         host=TRUNK_IP, extra=["-t", "t1"])
        assert trunk.successful >= 38, trunk  # >= 95 %
        deadline = time.monotonic() + IDLE + 8
        still_open = list(idle)
        while still_open and time.monotonic() < deadline:
            time.sleep(0.5)
            gone = closed_by_peer(still_open)
            still_open = [c for c in still_open if c not in gone]
        closed = len(idle) - len(still_open)
        print(f"\ntcp: {closed}/{len(idle)} idle stranger connections closed "
              f"{time.monotonic() - deadline + IDLE + 8:.1f} s after the trunk calls; "
              f"trunk {trunk.successful}/40 calls over TCP")
        assert closed == len(idle), f"{closed}/{len(idle)} idle stranger connections closed by the edge"
    finally:
        for c in idle:
            c.close()


def test_a_trunk_connection_may_idle_longer_than_a_strangers(sec_edge) -> None:
    e = sec_edge([], defines={"TCP_IDLE_LIFETIME": IDLE})
    with socket.socket() as c:
        c.bind((TRUNK_IP, 0))
        c.connect(e.sip_addr)
        port = c.getsockname()[1]
        assert options_over(c, port, 1) == b"SIP/2.0 200 OK"
        time.sleep(IDLE + 3)
        # Same connection, after longer than a stranger's idle lifetime.
        assert options_over(c, port, 2) == b"SIP/2.0 200 OK"


def test_a_strangers_tcp_request_gets_403_and_the_connection_closes(sec_edge) -> None:
    e = sec_edge([])
    with socket.socket() as c:
        c.bind((STRANGER_IP, 0))
        c.connect(e.sip_addr)
        assert options_over(c, c.getsockname()[1], 1) == b"SIP/2.0 403 Forbidden"
        c.settimeout(3)
        rest = b""
        try:
            while chunk := c.recv(65535):
                rest += chunk
        except TimeoutError:
            raise AssertionError("the edge kept a stranger's TCP connection open after its 403") from None
        except ConnectionResetError:
            pass


def test_a_stranger_flooding_over_tcp_is_banned_like_over_udp(sec_edge) -> None:
    e = sec_edge([], defines={"FLOOD_BAN_SECONDS": 30})
    answered = 0
    silent_at = None
    for n in range(1, 201):  # bounded: 200 connections, one request each
        with socket.socket() as c:
            c.bind((TCP_ATTACKER_IP, 0))
            c.settimeout(2)
            c.connect(e.sip_addr)
            try:
                line = _quick_options(c, n)
            except (TimeoutError, ConnectionResetError):
                line = b""
        if line == b"SIP/2.0 403 Forbidden":
            answered += 1
        elif not line:
            silent_at = n
            break
    assert silent_at is not None, "200 requests over TCP and never banned"
    assert 0 < answered < 100
    assert TCP_ATTACKER_IP in str(e.rpc("htable.dump", "ipban"))
    print(f"\ntcp flood: {answered} requests answered (403) before the ban")


def _quick_options(conn: socket.socket, n: int) -> bytes:
    """One OPTIONS with a short wait: a banned source gets silence."""
    conn.settimeout(0.5)
    host, port = conn.getsockname()
    conn.sendall((f"OPTIONS sip:{EDGE_IP} SIP/2.0\r\n"
                  f"Via: SIP/2.0/TCP {host}:{port};branch=z9hG4bKq{n}\r\n"
                  f"From: <sip:x@{host}>;tag=q{n}\r\nTo: <sip:{EDGE_IP}>\r\nCall-ID: q-{n}-{port}\r\n"
                  f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    return conn.recv(65535).split(b"\r\n", 1)[0]
