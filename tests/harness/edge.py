"""The project's Kamailio edge (kamailio-conf/kamailio.cfg) in front of real FreeSWITCH workers.

Reuses tests/kamailio/kamailio_harness.py (the cfg rendered with its three local files), moved onto the
test's own address: carrier side and worker side are two ports of ``host``; calls the workers send
toward the carrier (transfers, escalations, dial-outs) go to ``carrier_term`` (the SIPp human).
"""

from __future__ import annotations

import sys
from pathlib import Path

_KAMAILIO_TESTS = Path(__file__).resolve().parents[1] / "kamailio"
if str(_KAMAILIO_TESTS) not in sys.path:
    sys.path.insert(0, str(_KAMAILIO_TESTS))

from kamailio_harness import KamailioEdge, Worker  # noqa: E402

from harness.freeswitch import FreeSwitch  # noqa: E402
from harness.net import free_port  # noqa: E402


def start_edge(workdir: Path, host: str, workers: list[FreeSwitch], *, carriers: tuple[str, ...],
               carrier_term: str, ping_interval: int = 1, start: bool = True) -> KamailioEdge:
    """An edge on host dispatching to workers. Its worker-side address is ``edge.private``: each
    worker's kamailio_edge var must name it (set before that FreeSWITCH starts)."""
    sip_port, private_port = free_port(host), free_port(host)
    edge = KamailioEdge(
        workdir,
        workers=[Worker(fs.values["worker_id"], fs.host, fs.sip_port) for fs in workers],
        carriers=carriers,
        worker_group=tuple(fs.host for fs in workers),
        defines={
            "EDGE_PUBLIC_ADDR": host,
            "EDGE_SIP_PORT": sip_port,
            "EDGE_PRIVATE_ADDR": host,
            "EDGE_PRIVATE_PORT": private_port,
            "CARRIER_TERM_URI": f'"{carrier_term}"',
            "DS_PING_INTERVAL": ping_interval,
            "TM_FR_TIMER": 3000,
        },
        log_level=2,
    )
    edge.public = (host, sip_port)  # type: ignore[attr-defined]
    edge.private = (host, private_port)  # type: ignore[attr-defined]
    if start:
        edge.start()
    return edge

