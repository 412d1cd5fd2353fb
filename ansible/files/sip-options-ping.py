#!/usr/bin/env python3
"""Send SIP OPTIONS over UDP and exit 0 on a 200 reply (upgrade.yml's health check of an edge).

    sip-options-ping.py HOST PORT [--source ADDR] [--attempts N] [--timeout S]

Exit 0: "SIP/2.0 200" came back. Exit 1: another final reply, or none within attempts x timeout.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys


def options(host: str, port: int, source: str, local_port: int) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    tag = secrets.token_hex(4)
    call_id = secrets.token_hex(12)
    lines = [
        f"OPTIONS sip:{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {source}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:health@{source}>;tag={tag}",
        f"To: <sip:{host}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:health@{source}:{local_port}>",
        "User-Agent: aivg-upgrade-health",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--source", default="")
    parser.add_argument("--attempts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    last = "no reply"
    for _ in range(max(1, args.attempts)):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((args.source, 0))
            sock.settimeout(args.timeout)
            source, local_port = sock.getsockname()[:2]
            sock.sendto(options(args.host, args.port, source, local_port), (args.host, args.port))
            try:
                while True:
                    data, _ = sock.recvfrom(65535)
                    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
                    parts = status.split()
                    if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit():
                        if parts[1] == "200":
                            print(status)
                            return 0
                        last = status
                        if int(parts[1]) >= 200:
                            break
            except TimeoutError:
                continue
    print(f"no 200 from {args.host}:{args.port}: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
