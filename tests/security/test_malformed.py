"""Issue 11 finding 5: malformed or hostile SIP from a trunk address never reaches a worker.

~300 requests (oversized, 1,000 headers, bad Via branch/port, CSeq >= 2^31, junk users, ${...}
expansion syntax, random bytes as SDP, missing or repeated headers...) plus valid controls are sent
from the trunk; a worker stand-in records every request the edge forwards. Only the controls may arrive.
"""

from __future__ import annotations

import collections
import time

from kamailio_harness import sipp_uac
from sip_corpus import Corpus
from sip_tools import TRUNK_IP, header, udp_socket


def test_only_valid_requests_reach_the_worker(sec_edge, counting_workers) -> None:
    (w,) = counting_workers(1)
    e = sec_edge([w])
    assert e.wait_flags(f"sip:{w.host}:{w.port}", "AP", timeout=10) == "AP"
    replies: collections.Counter[str] = collections.Counter()
    with udp_socket(TRUNK_IP) as s:
        cases = Corpus(e.host, e.sip_port, (TRUNK_IP, s.getsockname()[1]), (w.host, w.port)).build()
        assert len(cases) >= 300
        s.setblocking(False)

        def drain() -> None:
            try:
                while True:
                    data = s.recv(65535)
                    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                    if not line.startswith("SIP/2.0 1"):
                        replies[line] += 1
            except BlockingIOError:
                pass

        # The hostile cases first, then (once the edge has caught up) the valid controls, so a loaded
        # machine dropping a datagram cannot pass for a refusal.
        for _, raw, _ in [c for c in cases if not c[2]]:
            s.sendto(raw, e.sip_addr)
            time.sleep(0.004)
            drain()
        time.sleep(1.0)
        for _, raw, _ in [c for c in cases if c[2]]:
            s.sendto(raw, e.sip_addr)
            time.sleep(0.05)
            drain()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            drain()

    expected = {header(raw, "Call-ID") for _, raw, forward in cases if forward}
    by_call_id = {header(raw, "Call-ID"): name for name, raw, forward in cases if not forward}
    forwarded_bad = sorted({by_call_id.get(r.call_id, f"unknown call-id {r.call_id[:40]!r}")
                            for r in w.received if r.call_id not in expected})
    assert forwarded_bad == [], f"{len(forwarded_bad)} malformed cases reached the worker: {forwarded_bad}"
    assert {r.call_id for r in w.received} == expected
    # Only the valid in-dialog controls (re-INVITE answered 486, BYE/INFO/NOTIFY answered 200) got a 2xx;
    # the rest of the corpus was answered with a refusal or, for what cannot be parsed, nothing.
    assert sum(n for line, n in replies.items() if line.startswith("SIP/2.0 2")) == 3
    assert sum(n for line, n in replies.items() if line[8:9] in ("4", "5")) >= 200
    assert e.alive()
    print(f"\n{len(cases)} cases, {len(expected)} valid forwarded, 0 malformed forwarded; "
          f"replies {dict(replies)}")


def test_a_real_call_right_after_the_corpus_succeeds(sec_edge, sipp_workers) -> None:
    (w,) = sipp_workers(1)
    e = sec_edge([w])
    with udp_socket(TRUNK_IP) as s:
        for _, raw, forward in Corpus(e.host, e.sip_port, (TRUNK_IP, s.getsockname()[1]),
                                      (w.host, w.port)).build():
            if not forward:
                s.sendto(raw, e.sip_addr)
                time.sleep(0.002)
    stats = sipp_uac(e.workdir, "after", e.sip_target, calls=5, rate=10, host=TRUNK_IP)
    assert (stats.successful, stats.failed) == (5, 0)
    assert e.alive()
