"""`kamailio -c` accepts the repository cfg with every switch on and off, as Ansible's validate step will."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from kamailio_harness import KAMAILIO, KAMAILIO_CFG, REPO, KamailioEdge, sipp_uac, stop_all
from test_security import make_self_signed

SWITCH_SETS = {
    "defaults": {},
    "with_tls": {"WITH_TLS": None},
    "with_topoh": {"WITH_TOPOH": None, "TOPOH_MASK_KEY": '"test-key"'},
    "with_prometheus": {"WITH_PROMETHEUS": None},
    "behind_nat": {"EDGE_ADVERTISE_ADDR": "198.51.100.7"},
    "nat_and_tls": {"EDGE_ADVERTISE_ADDR": "198.51.100.7", "WITH_TLS": None},
    "call_load": {"DS_ALG": 10},
    "with_http_rpc": {"WITH_HTTP_RPC": None},
    "everything": {"WITH_TLS": None, "WITH_TOPOH": None, "TOPOH_MASK_KEY": '"test-key"',
                   "WITH_PROMETHEUS": None, "WITH_HTTP_RPC": None, "DS_ALG": 11},
}


def test_the_cfg_alone_checks_clean_with_its_defaults(tmp_path: Path) -> None:
    # No kamailio-local.cfg at all: import_file is optional and every value has a default.
    shutil.copy(KAMAILIO_CFG, tmp_path / "kamailio.cfg")
    run = subprocess.run([KAMAILIO, "-c", "-f", str(tmp_path / "kamailio.cfg")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "config file ok" in run.stdout + run.stderr
    assert "WARNING" not in run.stderr


@pytest.mark.parametrize("name", list(SWITCH_SETS))
def test_kamailio_c_passes_with_each_switch(tmp_path: Path, name: str) -> None:
    defines = dict(SWITCH_SETS[name])
    if "WITH_TLS" in defines:
        cert, key = make_self_signed(tmp_path)
        defines |= {"TLS_CERTIFICATE": f'"{cert}"', "TLS_PRIVATE_KEY": f'"{key}"'}
    edge = KamailioEdge(tmp_path / "edge", defines=defines)
    run = edge.check()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "WARNING" not in run.stderr
    if "WITH_TLS" in defines:
        assert "name carrier_tls" in run.stdout + run.stderr


def test_example_files_in_the_repository_are_accepted(tmp_path: Path) -> None:
    conf = REPO / "kamailio-conf"
    cert, key = make_self_signed(tmp_path)
    tls_cfg = tmp_path / "tls.cfg"
    tls_cfg.write_text((conf / "tls.cfg").read_text().replace("/etc/kamailio/tls/edge.pem", str(cert))
                       .replace("/etc/kamailio/tls/edge.key", str(key)))
    edge = KamailioEdge(tmp_path / "edge", defines={"WITH_TLS": None, "TLS_CONFIG": f'"{tls_cfg}"'})
    shutil.copy(conf / "dispatcher.list", edge.dispatcher_list)
    shutil.copy(conf / "address.list", edge.address_list)
    # -c does not load the lists; a real start does, and fails loudly on a bad line. Every process loads
    # the system CA bundle of tls.cfg's client profile: tens of seconds on a loaded 2-core machine.
    edge.start(timeout=90)
    try:
        flags = edge.worker_flags()
        assert set(flags) == {"sip:10.0.0.11:5080", "sip:10.0.0.12:5080"}
        dump = str(edge.rpc("permissions.subnetDump"))
        assert "54.172.60.0" in dump and "twilio-us1-ashburn" in dump
    finally:
        edge.stop()


@pytest.mark.slow
def test_topology_hiding_masks_the_edge_but_calls_still_complete(edge, workers, tmp_path: Path) -> None:
    (w,) = workers(1)
    e = edge([w], defines={"WITH_TOPOH": None, "TOPOH_MASK_KEY": '"test-key"',
                           "TOPOH_MASK_IP": '"10.255.255.1"'})
    stats = sipp_uac(e.workdir, "caller", e.sip_target, calls=3, rate=10,
                     extra=["-trace_msg", "-message_file", str(tmp_path / "caller.msg")])
    assert (stats.successful, stats.failed) == (3, 0)
    assert stop_all([w])[0].calls_answered == 3
    seen_by_carrier = (tmp_path / "caller.msg").read_text(errors="replace")
    # In the SIP headers the carrier sees the mask address, never the worker's. The SDP (o=, c=) still
    # names the worker's media address: topoh does not touch bodies (docs/kamailio.md).
    headers = "\n".join(line for line in seen_by_carrier.splitlines() if not line.startswith(("o=", "c=")))
    assert "10.255.255.1" in headers
    assert w.host not in headers


def test_prometheus_metrics_on_the_rpc_listener(edge) -> None:
    e = edge([], defines={"WITH_PROMETHEUS": None})
    metrics = httpx.get(f"http://127.0.0.1:{e.rpc_port}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "kamailio_" in metrics.text


def test_topology_hiding_without_a_mask_key_is_refused(tmp_path: Path) -> None:
    # No shipped secret: WITH_TOPOH and no TOPOH_MASK_KEY must not start with a guessable key.
    edge = KamailioEdge(tmp_path / "edge", defines={"WITH_TOPOH": None})
    run = edge.check()
    assert run.returncode != 0
    cfg_lines = edge.cfg.read_text().splitlines()
    failing = [int(n) for n in re.findall(r"kamailio\.cfg, line (\d+)", run.stderr)]
    assert failing and "TOPOH_MASK_KEY" in cfg_lines[failing[0] - 1]
