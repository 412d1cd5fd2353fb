"""Calls from the carrier reach healthy FreeSWITCH workers (SIPp stand-ins) through the real edge cfg."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kamailio_harness import (
    LOADTEST_SCENARIOS,
    TRUNK_IP,
    WORKER_IPS,
    SippUas,
    finish_uac,
    sip_request,
    sipp_uac,
    stop_all,
)


def test_a_call_completes_end_to_end_through_the_edge(edge, tmp_path: Path) -> None:
    seen = tmp_path / "worker.msg"
    w = SippUas(tmp_path, "worker", WORKER_IPS[0], extra=["-trace_msg", "-message_file", str(seen)]).start()
    try:
        e = edge([w])
        stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=1, rate=1, hold_ms=100)
        assert (stats.returncode, stats.successful, stats.failed) == (0, 1, 0)
    finally:
        w.kill()
    # INVITE, ACK and BYE all reached the worker, each through the edge (Record-Route / Route).
    text = seen.read_text(errors="replace")
    assert text.count("INVITE sip:1000@") == 1
    assert text.count("ACK sip:worker@") == 1
    assert text.count("BYE sip:worker@") == 1


def test_round_robin_spreads_calls_evenly_over_three_workers(edge, workers) -> None:
    ws = workers(3)
    e = edge(ws, defines={"DS_ALG": 4})
    # The spread is the point, not the rate: 10 calls/s stays clear of a loaded test machine.
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=60, rate=10)
    assert (stats.returncode, stats.successful, stats.failed) == (0, 60, 0)
    assert [s.calls_answered for s in stop_all(ws)] == [20, 20, 20]


def test_weights_split_calls_as_configured(edge, workers) -> None:
    ws = workers(2)
    e = edge(ws, defines={"DS_ALG": 9}, attrs={"fs1": "weight=80", "fs2": "weight=20"})
    # Kamailio spreads the weights over a shuffled 100-slot cycle: exact after 100 calls.
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=100, rate=50)
    assert (stats.successful, stats.failed) == (100, 0)
    assert [s.calls_answered for s in stop_all(ws)] == [80, 20]


@pytest.mark.slow
def test_call_load_balances_concurrent_calls_and_refuses_beyond_maxload(edge, workers) -> None:
    ws = workers(2)
    e = edge(ws, defines={"DS_ALG": 10}, attrs={"fs1": "maxload=4", "fs2": "maxload=4"})
    # 10 calls held 3 s, all up at once: 4 per worker fit, the last 2 get our 503.
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=10, rate=20, hold_ms=3000)
    assert (stats.successful, stats.failed) == (8, 2)
    assert [s.calls_answered for s in stop_all(ws)] == [4, 4]
    # Every BYE released its slot: the load is back to zero on both workers.
    loads = re.findall(r'"DLGLOAD":\s*(\d+)', str(e.rpc("dispatcher.list")).replace("'", '"'))
    assert loads == ["0", "0"]
    assert "cannot find load" not in e.log()


@pytest.mark.slow
def test_worker_killed_under_load_loses_no_call_and_comes_back_after_restart(edge, workers) -> None:
    w1, w2 = workers(2)
    e = edge([w1, w2])
    caller = sipp_uac(e.workdir, "caller", e.sip_target, calls=80, rate=20, hold_ms=500,
                      scenario="uac-call-bye-may-timeout.xml", background=True)
    time.sleep(1.5)
    w2.kill()  # SIGKILL: no goodbye, like a crashed FreeSWITCH
    stats = finish_uac(caller, e.workdir / "caller.csv")
    # Every INVITE was answered 200: the ones sent to the dead worker failed over after fr_timer.
    assert (stats.returncode, stats.successful, stats.failed) == (0, 80, 0)
    assert e.wait_flags(w2.uri, "IP", timeout=5) == "IP"
    assert "worker failed, marking it down" in e.log()
    w2.start()
    assert e.wait_flags(w2.uri, "AP", timeout=10) == "AP"
    after = sipp_uac(e.workdir, "caller-after", e.sip_target, calls=10, rate=20)
    assert (after.successful, after.failed) == (10, 0)
    assert w2.stop().calls_answered >= 5


def test_worker_answering_503_fails_over_and_is_marked_down(edge, workers) -> None:
    (good,) = workers(1)
    (busy,) = workers(1, scenario="uas-worker-503.xml")
    # The busy stand-in answers OPTIONS 200 (like FreeSWITCH without sip-options-respond-503-on-busy),
    # so probes are slowed down to look at the mark the failed INVITE left.
    e = edge([busy, good], defines={"DS_ALG": 4, "DS_PING_INTERVAL": 30})
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=6, rate=10)
    assert (stats.successful, stats.failed) == (6, 0)
    assert e.worker_flags()[busy.uri] == "IP"
    good_stats, busy_stats = stop_all([good, busy])
    assert good_stats.calls_answered == 6
    assert busy_stats.calls_answered >= 1
    assert "failover call=" in e.log()


def test_callee_refusal_is_not_failed_over(edge, workers) -> None:
    (w,) = workers(1, scenario="uas-reject-486.xml")
    (spare,) = workers(1)
    # Algorithm 8 tries the highest priority first: always the refusing worker here.
    e = edge([w, spare], defines={"DS_ALG": 8}, priorities={"fs1": 10, "fs2": 5})
    reply = sip_request(("127.0.0.1", e.sip_port), "INVITE", src=TRUNK_IP, timeout=3)
    # 486 is the callee's answer, not a node failure: the carrier gets it and no other worker is tried.
    assert reply is not None and reply.startswith("SIP/2.0 486")
    assert e.worker_flags()[w.uri] == "AP"
    assert [s.calls_answered for s in stop_all([w, spare])] == [1, 0]


def test_draining_freeswitch_answering_options_503_is_taken_out_of_rotation(edge, workers, tmp_path) -> None:
    (spare,) = workers(1)
    draining = SippUas(tmp_path, "draining", WORKER_IPS[1], scenario="uas-options-503-draining.xml",
                       auto_answer=False).start()
    try:
        e = edge([spare, draining])
        # OPTIONS answered 503 = down (DS_PING_REPLY_CODES class=2): no call is offered to it.
        assert e.wait_flags(draining.uri, "IP", timeout=8) == "IP"
        stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=6, rate=20)
        assert (stats.successful, stats.failed) == (6, 0)
        assert stop_all([spare])[0].calls_answered == 6
    finally:
        draining.kill()


@pytest.mark.slow
def test_a_cancelled_call_is_never_tried_on_another_worker(edge, workers) -> None:
    (ringing,) = workers(1, scenario="uas-worker-ringing-until-cancel.xml")
    (spare,) = workers(1)
    e = edge([ringing, spare], defines={"DS_ALG": 8}, priorities={"fs1": 10, "fs2": 5})
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=4, rate=10, hold_ms=500,
                     scenario="uac-cancel-while-ringing.xml",
                     extra=["-inf", str(LOADTEST_SCENARIOS / "callers.csv")])
    # Every caller got 200 for its CANCEL and 487 for its INVITE.
    assert (stats.successful, stats.failed) == (4, 0)
    ringing_stats, spare_stats = stop_all([ringing, spare])
    assert ringing_stats.calls_answered == 4
    assert spare_stats.calls_answered == 0  # no failover after CANCEL
    assert e.worker_flags()[ringing.uri] == "AP"  # a 487 is not a node failure


def test_no_worker_up_answers_503_with_retry_after(edge, workers) -> None:
    (w,) = workers(1)
    e = edge([w], defines={"NO_WORKER_RETRY_AFTER": 45})
    w.kill()
    assert e.wait_flags(w.uri, "IP", timeout=8) == "IP"
    reply = sip_request(("127.0.0.1", e.sip_port), "INVITE", src=TRUNK_IP)
    assert reply is not None and reply.startswith("SIP/2.0 503")
    assert "\r\nRetry-After: 45\r\n" in reply


@pytest.mark.parametrize("alg", [4, 10])
def test_worker_call_goes_to_the_carrier_termination_uri(edge, workers, tmp_path: Path, alg: int) -> None:
    received = tmp_path / "carrier.msg"
    carrier = SippUas(tmp_path, "carrier", TRUNK_IP, extra=["-trace_msg", "-message_file", str(received)])
    carrier.start()
    try:
        e = edge([], worker_group=[WORKER_IPS[0]],
                 defines={"CARRIER_TERM_URI": f'"sip:127.0.0.1:{carrier.port}"', "DS_ALG": alg})
        # FreeSWITCH dials out through the edge's private (worker-facing) socket.
        stats = sipp_uac(e.workdir, "worker-dialout", f"127.0.0.1:{e.private_port}", calls=2, rate=5,
                         host=WORKER_IPS[0])
        assert (stats.successful, stats.failed) == (2, 0)
        assert carrier.stop().calls_answered == 2
        text = received.read_text(errors="replace")
        # The carrier identifies its trunk by the R-URI host: the worker's R-URI (edge private
        # address) was rewritten to the termination URI's host and port.
        assert f"INVITE sip:1000@127.0.0.1:{carrier.port} SIP/2.0" in text
        # The edge stays in the path on both of its sockets (double Record-Route).
        invite = text[text.index("INVITE sip:"):]
        assert invite.split("\n\n", 1)[0].count("Record-Route:") == 2
        # Its BYE is not call-load accounting of any worker (no "cannot find load" error).
        assert "cannot find load" not in e.log() and "ERROR" not in e.log()
    finally:
        carrier.kill()
