"""Drain state has one owner: the dispatcher CLI. The play renders the list of workers, keeps the flags
the CLI wrote, and a re-apply after `dispatcher drain` changes nothing and leaves the worker drained in
the running edge (real Kamailio with the repository cfg, the real `dispatcher` CLI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aivg_ansible_support import ansible_env, run, tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kamailio"))
from kamailio_harness import KAMAILIO, KamailioEdge, Worker  # noqa: E402

# This helper's loopback addresses (nothing listens there: the probes fail, the drain is what counts).
WORKERS = {"fs1": "127.0.0.101", "fs2": "127.0.0.102"}


def _apply_list(tmp: Path, edge: KamailioEdge) -> tuple[int, str]:
    """The kamailio role's dispatcher-list tasks, as site.yml runs them, into the edge's directory."""
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = {"all": {"children": {
        "edge": {"hosts": {"edge1": {"ansible_connection": "local",
                                     "ansible_python_interpreter": sys.executable}}},
        "workers": {"hosts": {name: {"aivg_private_address": ip, "aivg_worker_id": name}
                              for name, ip in WORKERS.items()}},
    }}}
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [{
        "name": "Render the dispatcher list as the kamailio role does.",
        "hosts": "edge",
        "gather_facts": False,
        "vars": {"kamailio_public_address": "127.0.0.100", "kamailio_private_address": "127.0.0.100",
                 "kamailio_private_port": 5062, "kamailio_trunk_addresses": ["127.0.0.1/32"],
                 "kamailio_cfg_dir": str(edge.workdir), "kamailio_service_start": False,
                 "kamailio_conf_src": str(Path(__file__).resolve().parents[2] / "kamailio-conf")},
        "tasks": [
            {"name": "Build the worker list.", "ansible.builtin.include_role": {
                "name": "kamailio", "tasks_from": "preflight", "public": True}},
            {"name": "Render.", "ansible.builtin.include_role": {
                "name": "kamailio", "tasks_from": "dispatcher_list"}},
        ],
    }]
    (tmp / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    got = run([tool("ansible-playbook"), "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml")],
              env=ansible_env(tmp), timeout=300)
    return got.returncode, got.stdout + got.stderr


def _changed(output: str) -> int:
    return int(re.search(r"edge1\s*:.*changed=(\d+)", output)[1])


def _cli(edge: KamailioEdge, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHER_RPC_URL": edge.rpc_url,
           "DISPATCHER_LIST_FILE": str(edge.dispatcher_list),
           "DISPATCHER_RELOAD_DELTA": "1", "DISPATCHER_ESL_WORKERS": "{}"}
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], env=env, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.fixture
def edge(tmp_path: Path):
    if not os.path.exists(KAMAILIO):
        pytest.skip("kamailio is installed by `make test`")
    made = KamailioEdge(tmp_path / "edge", workers=[Worker(n, ip, 5080) for n, ip in WORKERS.items()])
    yield made
    made.stop()


def test_a_reapply_after_a_cli_drain_changes_nothing_and_the_worker_stays_drained(
        edge: KamailioEdge, tmp_path: Path, collections_ready: None) -> None:
    # First apply over the harness's list: Ansible's rendering, new workers probing (8) like `dispatcher add`.
    rc, out = _apply_list(tmp_path / "a1", edge)
    assert rc == 0, out[-4000:]
    text = edge.dispatcher_list.read_text()
    assert re.search(r"^1 sip:127\.0\.0\.102:5080 8 0 duid=fs2$", text, re.M), text
    edge.start()

    drained = _cli(edge, "drain", "fs2")
    assert drained.returncode == 0, drained.stderr
    after_drain = edge.dispatcher_list.read_text()
    # The CLI's own flags: disabled (4) + probing (8).
    assert re.search(r"^1 sip:127\.0\.0\.102:5080 12 0 duid=fs2$", after_drain, re.M), after_drain
    assert edge.wait_flags("sip:127.0.0.102:5080", "DX")[:1] == "D"

    rc, out = _apply_list(tmp_path / "a2", edge)
    assert rc == 0, out[-4000:]
    assert _changed(out) == 0, out[-4000:]
    assert edge.dispatcher_list.read_text() == after_drain
    # Kamailio reading the file anew still sends fs2 nothing.
    edge.rpc("dispatcher.reload")
    assert edge.worker_flags()["sip:127.0.0.102:5080"][:1] == "D"

    # Enabled again with the CLI: the next apply keeps that too.
    enabled = _cli(edge, "enable", "fs2", "--no-wait")
    assert enabled.returncode == 0, enabled.stderr
    after_enable = edge.dispatcher_list.read_text()
    assert re.search(r"^1 sip:127\.0\.0\.102:5080 8 0 duid=fs2$", after_enable, re.M), after_enable
    rc, out = _apply_list(tmp_path / "a3", edge)
    assert rc == 0 and _changed(out) == 0, out[-4000:]
    assert edge.dispatcher_list.read_text() == after_enable
