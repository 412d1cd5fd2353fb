"""Free loopback ports for SIPp instances (SIP port, and even media ports with +2 for -rtp_echo)."""

from __future__ import annotations

import random
import socket


def _udp_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(host: str = "127.0.0.1", *, span: int = 1, step: int = 1, even: bool = False) -> int:
    """A port p such that p, p+step, ... (span ports) are free for UDP on `host` right now.

    SIPp binds -mp and -mp+2 for -rtp_echo, so media ports use span=2, step=2, even=True.
    Random choice in 20000-59999 keeps parallel test runs from colliding."""
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(20000, 60000 - span * step)
        if even:
            port &= ~1
        if all(_udp_free(host, port + i * step) for i in range(span)):
            return port
    raise RuntimeError(f"no free UDP port block found on {host}")
