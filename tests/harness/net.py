"""Free ports on a given loopback address (no fixed ports anywhere)."""

from __future__ import annotations

import random
import socket

_handed_out: set[tuple[str, int]] = set()


def free_port(host: str, *, udp: bool = True, tcp: bool = True, span: int = 1) -> int:
    """A port (and the span-1 ports after it) free for UDP and TCP on host, never handed out twice."""
    for _ in range(500):
        port = random.randrange(20000, 60000 - span)
        if any((host, p) in _handed_out for p in range(port, port + span)):
            continue
        try:
            socks = []
            for p in range(port, port + span):
                if udp:
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(u)
                    u.bind((host, p))
                if tcp:
                    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(t)
                    t.bind((host, p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _handed_out.update((host, p) for p in range(port, port + span))
        return port
    raise RuntimeError(f"no free port on {host}")


def wait_tcp(host: str, port: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
