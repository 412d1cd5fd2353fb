"""The shipped scenarios and `loadtest sip` through the repository's Kamailio edge (record-routing,
stateful, dispatcher failover), started from kamailio-conf/kamailio.cfg by the edge helper's harness."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from loadtest.cli import main

pytestmark = pytest.mark.slow
HARNESS_DIR = Path(__file__).resolve().parents[1] / "kamailio"
try:
    sys.path.insert(0, str(HARNESS_DIR))
    from kamailio_harness import KAMAILIO, KamailioEdge, Worker
except ImportError as exc:  # the edge helper's harness is not in this checkout
    pytest.skip(f"Kamailio edge harness not importable: {exc}", allow_module_level=True)
finally:
    if sys.path and sys.path[0] == str(HARNESS_DIR):
        sys.path.pop(0)

if shutil.which(KAMAILIO) is None:
    pytest.skip("kamailio is installed by `make test` (requirements/apt.txt)", allow_module_level=True)

WORKER_IP = "127.0.0.11"   # dispatcher destinations live on their own loopback addresses


@pytest.fixture
def edge(tmp_path):
    made = []

    def _edge(*stand_ins) -> KamailioEdge:
        workers = [Worker(f"fs{i + 1}", u.host, u.port) for i, u in enumerate(stand_ins)]
        e = KamailioEdge(tmp_path / f"edge{len(made)}", workers=workers, log_level=1)
        made.append(e)
        e.start()
        return e

    yield _edge
    for e in made:
        e.stop()


def test_speech_calls_complete_through_the_record_routing_edge(start_uas, edge, tmp_path):
    worker = start_uas("uas-worker-echo", host=WORKER_IP)
    kam = edge(worker)
    out = tmp_path / "run"
    code = main(["sip", "--quiet", "--target", kam.sip_target, "--rate", "10", "--calls", "20",
                 "--hold-ms", "500", "--watch-pid", f"kamailio={kam.proc.pid}", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    (step,) = report["steps"]
    assert code == 0, report["verdict"]
    # ACK and BYE went back through the edge by the recorded route: every call ended with 200 to BYE
    assert (step["attempted"], step["successful"], step["failed"]) == (20, 20, 0)
    # the edge (main process and its children) was sampled from /proc during the run; 20 calls cost
    # Kamailio only milliseconds of CPU (below the 10 ms tick), so memory is what is sure to show
    kamailio = report["resources"]["kamailio"]
    assert kamailio["pid"] == kam.proc.pid and kamailio["series"] and kamailio["rss_mb_peak"] > 1


def test_cancel_while_ringing_through_the_edge(start_uas, edge, tmp_path):
    worker = start_uas("uas-worker-ringing-until-cancel", host=WORKER_IP)
    kam = edge(worker)
    out = tmp_path / "run"
    code = main(["sip", "--quiet", "--target", kam.sip_target, "--scenario", "uac-cancel-while-ringing",
                 "--rate", "5", "--calls", "5", "--hold-ms", "300", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert code == 0, report["verdict"]
    assert report["steps"][0]["successful"] == 5


def test_edge_fails_over_from_a_503_worker_so_callers_see_no_failure(start_uas, edge, tmp_path):
    busy = start_uas("uas-worker-503", host=WORKER_IP)
    good = start_uas("uas-worker-echo", host="127.0.0.12")
    kam = edge(busy, good)
    out = tmp_path / "run"
    code = main(["sip", "--quiet", "--target", kam.sip_target, "--rate", "10", "--calls", "10",
                 "--hold-ms", "200", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert code == 0, report["verdict"]
    assert report["steps"][0]["successful"] == 10


def test_options_ping_and_register_refusal_at_the_edge(edge, start_uas, tmp_path):
    worker = start_uas("uas-worker-echo", host=WORKER_IP)
    kam = edge(worker)
    for scenario in ("uac-options-ping-expect-200", "uac-register-expect-403"):
        out = tmp_path / scenario
        code = main(["sip", "--quiet", "--target", kam.sip_target, "--scenario", scenario, "--rate", "5",
                     "--calls", "3", "--out", str(out)])
        report = json.loads((out / "report.json").read_text())
        assert code == 0, f"{scenario}: {report['verdict']}"
        assert report["steps"][0]["successful"] == 3
