"""Scanners (sipvicious svmap/svwar) from trunk and non-trunk sources, with their stock User-Agent and
disguised as a carrier, learn nothing useful: no answer to the stock UA, no product or version, no
extension that answers differently from another."""

from __future__ import annotations

import pytest
from sip_tools import EDGE_IP, SCANNER_IP, TRUNK_IP, sipvicious

pytestmark = pytest.mark.slow
DISGUISE = "Twilio Gateway"


@pytest.fixture
def scan(sec_edge):
    e = sec_edge([])

    def run(tool: str, src: str, ua: str, *extra: str) -> str:
        return sipvicious(tool, "-b", src, "-x", src, "-p", str(e.sip_port), *extra, EDGE_IP, "-t", "0.5",
                          user_agent=ua)

    run.edge = e  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("src", [SCANNER_IP, TRUNK_IP])
def test_stock_scanners_get_no_answer(scan, src: str) -> None:
    assert "found nothing" in scan("svmap", src, "stock")
    assert "found nothing" in scan("svwar", src, "stock", "-e", "100-110", "-m", "OPTIONS")
    assert f"scanner dropped src={src}" in scan.edge.log()


@pytest.mark.parametrize("src", [SCANNER_IP, TRUNK_IP])
def test_disguised_scanners_learn_no_product_and_no_extension(scan, src: str) -> None:
    found = scan("svmap", src, DISGUISE)
    # The edge answers (a stranger gets 403, a trunk's OPTIONS 200) but names no product or version.
    assert "| unknown" in found
    for leak in ("kamailio", "ai-voice", "freeswitch", "sip:"):
        assert leak not in found.lower()
    for method in ("OPTIONS", "INVITE", "REGISTER"):
        if method == "INVITE" and src == TRUNK_IP:
            continue  # a trunk's INVITEs are calls: they go to a worker by design
        out = scan("svwar", src, DISGUISE, "-e", "100-120,1000,2000", "-m", method)
        assert "found nothing" in out, (method, out[-400:])
    assert scan.edge.alive()
