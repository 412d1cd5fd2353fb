"""A real apply: site.yml's common, kamailio, dispatcher, gateway and monitoring roles into a clean
Debian 12 root: `--check` on the fresh root first, then two applies with a drain by the dispatcher CLI's
own list-file code between them, `--check --diff` after, then the root booted with systemd-nspawn (when
it can boot here) to prove the hardened units start and answer.

The root is made with debootstrap and reached through Ansible's chroot connection; service starts and
kernel changes (sysctl load, nftables load) are switched off by the roles' own variables. The host
`appliance` joins the example inventory's `edge` and `gateways` groups, so the example group_vars are
what gets rendered. Run alone with `pytest -m chroot tests/ansible` (several minutes: see docs/ansible.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from aivg_ansible_support import ANSIBLE_DIR, ansible_env, run, tool

from dispatcher.listfile import FLAG_DISABLED, read_list, write_list_atomically

pytestmark = [pytest.mark.chroot, pytest.mark.slow, pytest.mark.timeout(2400)]

SECRETS = {
    "vault_esl_password": "esl-test-secret",
    "vault_stream_token": "stream-test-token-0123",
    "vault_signalwire_token": "pat_test",
    "vault_openai_api_key": "",
    "vault_gateway_metrics_token": "metrics-test-token-0123",
    "vault_gateway_ops_token": "ops-test-token-0123456",
}


def _inventory(tmp: Path, root: Path, wheel: Path, house: Path) -> Path:
    # Snapshots of the inputs other people edit in the shared work tree, so both applies see the same.
    inputs = tmp / "inputs"
    shutil.copytree(ANSIBLE_DIR.parent / "kamailio-conf", inputs / "kamailio-conf")
    shutil.copy2(ANSIBLE_DIR.parent / "requirements" / "lock.txt", inputs / "lock.txt")
    # The operator's agent profiles: the packaged ones plus a custom "sales" desk.
    profiles = inputs / "profiles"
    shutil.copytree(ANSIBLE_DIR.parent / "gateway" / "profiles", profiles,
                    ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    sales = yaml.safe_load((profiles / "front-desk.yaml").read_text())
    sales.update(name="sales", numbers=["+15550199"], greeting="Sales, how can I help?")
    (profiles / "sales.yaml").write_text(yaml.safe_dump(sales, sort_keys=False))
    host = {
        "gateway_profiles_src": str(profiles),
        "kamailio_conf_src": str(inputs / "kamailio-conf"),
        "gateway_constraints_file": str(inputs / "lock.txt"),
        "dispatcher_constraints_file": str(inputs / "lock.txt"),
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3",
        "aivg_public_address": "203.0.113.10",
        "aivg_private_address": "10.0.0.10",
        "aivg_wheel": str(wheel),
        "aivg_wheelhouse": str(house),
        # No kernel and no systemd inside a chroot: render and install, never load or start.
        "common_sysctl_apply": False,
        "common_firewall_apply": False,
        "common_service_start": False,
        "kamailio_service_start": False,
        "gateway_service_start": False,
        "monitoring_service_start": False,
    }
    inventory = {"all": {"children": {"edge": {"hosts": {"appliance": host}},
                                      "gateways": {"hosts": {"appliance": None}}}}}
    path = tmp / "chroot.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def _apply(tmp: Path, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    secrets = tmp / "secrets.yml"
    secrets.write_text(yaml.safe_dump(SECRETS))
    cmd = [tool("ansible-playbook"), "-i", "inventories/example", "-i", str(inventory),
           "-e", f"@{secrets}", "--limit", "appliance", *extra, "site.yml"]
    return run(cmd, env=ansible_env(tmp), timeout=2000)


def _changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported a change (the TASK header above each "changed:" line)."""
    found, task = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.rstrip(" *")
        elif line.startswith("changed:"):
            found.append(task)
    return found


def _recap(output: str) -> dict[str, int]:
    line = next(x for x in output.splitlines() if x.startswith("appliance") and "ok=" in x)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _in_root(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *cmd], text=True, capture_output=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def applied(debian_root: Path, project_wheel: Path, wheelhouse: Path, collections_ready: None,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("apply")
    inventory = _inventory(tmp, debian_root, project_wheel, wheelhouse)
    started = time.monotonic()
    fresh_check = _apply(tmp, inventory, "--check", "--diff")
    check_seconds = time.monotonic() - started
    assert fresh_check.returncode == 0, fresh_check.stdout[-6000:] + fresh_check.stderr[-3000:]
    started = time.monotonic()
    first = _apply(tmp, inventory)
    first_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    # An operator drains fs2 with the dispatcher CLI: its own list-file code writes the flags (8 -> 12).
    # (The CLI against a live Kamailio, then a re-apply: tests/ansible/test_drain_ownership.py.)
    listed = debian_root / "etc" / "kamailio" / "dispatcher.list"
    dlist = read_list(listed)
    entry = dlist.find(1, "fs2")
    assert entry is not None
    entry.flags |= FLAG_DISABLED
    write_list_atomically(listed, dlist)
    drained = listed.read_text()
    started = time.monotonic()
    second = _apply(tmp, inventory)
    second_seconds = time.monotonic() - started
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    started = time.monotonic()
    installed_check = _apply(tmp, inventory, "--check", "--diff")
    installed_check_seconds = time.monotonic() - started
    assert installed_check.returncode == 0, installed_check.stdout[-6000:] + installed_check.stderr[-3000:]
    # Durations go to the log for docs/bench/ansible.md; nothing asserts on them.
    print(f"chroot apply: check on the fresh root {check_seconds:.0f}s, first {first_seconds:.0f}s, "
          f"second {second_seconds:.0f}s, check on the applied root {installed_check_seconds:.0f}s")
    return {"root": debian_root, "first": first, "second": second, "drained_list": drained,
            "fresh_check": fresh_check, "installed_check": installed_check}


def test_second_apply_changes_nothing(applied: dict[str, object]) -> None:
    second = applied["second"]
    recap = _recap(second.stdout)
    assert recap["changed"] == 0, _changed_tasks(second.stdout)
    assert recap["failed"] == 0


def test_check_mode_runs_on_the_fresh_root_and_reports_no_false_change_on_the_applied_one(
        applied: dict[str, object]) -> None:
    fresh = applied["fresh_check"]
    # On the fresh root it says what it would do (packages, files) ...
    assert _recap(fresh.stdout)["changed"] > 0
    assert _recap(fresh.stdout)["failed"] == 0
    # ... and on the applied root nothing is "would change".
    installed = applied["installed_check"]
    recap = _recap(installed.stdout)
    assert recap["changed"] == 0, _changed_tasks(installed.stdout)
    assert recap["failed"] == 0


def test_a_worker_drained_with_the_cli_stays_drained_when_ansible_runs_again(
        applied: dict[str, object]) -> None:
    listed = Path(applied["root"]) / "etc" / "kamailio" / "dispatcher.list"
    assert listed.read_text() == applied["drained_list"]
    # The CLI's flags: disabled (4) on top of probing (8).
    assert re.search(r"^1 sip:10\.0\.0\.22:5080 12 0 duid=fs2$", listed.read_text(), re.M)


def test_packages_are_installed(applied: dict[str, object]) -> None:
    root = applied["root"]
    for package in ("kamailio", "kamailio-extra-modules", "kamailio-utils-modules", "nftables", "chrony",
                    "python3-venv", "espeak-ng", "libespeak-ng1"):
        got = _in_root(root, "dpkg-query", "-W", "-f=${Status}", package)
        assert got.stdout == "install ok installed", f"{package}: {got.stdout} {got.stderr}"
    # Recommends stay out: no disk, IPMI or NVMe tools (root-run collectors) on an appliance VM.
    for package in ("smartmontools", "ipmitool", "nvme-cli", "prometheus-node-exporter-collectors"):
        got = _in_root(root, "dpkg-query", "-W", "-f=${Status}", package)
        assert got.stdout != "install ok installed", package


def test_rendered_kamailio_cfg_passes_kamailio_check_with_the_inventory_values(
        applied: dict[str, object]) -> None:
    got = _in_root(applied["root"], "kamailio", "-c", "-f", "/etc/kamailio/kamailio.cfg")
    output = got.stdout + got.stderr
    assert got.returncode == 0, output
    assert "config file ok" in output
    # The inventory's addresses, not kamailio.cfg's loopback defaults, are what Kamailio listens on.
    assert "[203.0.113.10]:5060 name carrier_udp" in output
    assert "[10.0.0.10]:5062 name workers" in output


def test_dispatcher_and_address_lists_come_from_the_inventory(applied: dict[str, object]) -> None:
    etc = Path(applied["root"]) / "etc" / "kamailio"
    dispatcher = (etc / "dispatcher.list").read_text()
    # New workers start probing (8), as `dispatcher add` writes them.
    assert re.search(r"^1 sip:10\.0\.0\.21:5080 8 0 duid=fs1$", dispatcher, re.M), dispatcher
    # fs2 was drained between the two applies (see the fixture): 8 + 4.
    assert re.search(r"^1 sip:10\.0\.0\.22:5080 12 0 duid=fs2$", dispatcher, re.M), dispatcher
    addresses = (etc / "address.list").read_text()
    assert re.search(r"^1 54\.172\.60\.0 30 0 trunk$", addresses, re.M), addresses
    assert re.search(r"^2 10\.0\.0\.21 32 0 worker$", addresses, re.M), addresses
    dropin = (Path(applied["root"]) / "etc/systemd/system/kamailio.service.d/10-aivg.conf").read_text()
    assert "-m 512 -M 16" in dropin


def test_gateway_venv_imports_and_cli_runs(applied: dict[str, object]) -> None:
    root = applied["root"]
    imported = _in_root(root, "/opt/aivg/venv/bin/python", "-c",
                        "import gateway.settings, gateway.cli, aiohttp, numpy, openai; print('ok')")
    assert imported.stdout.strip() == "ok", imported.stderr
    helped = _in_root(root, "/opt/aivg/venv/bin/gateway", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout


def test_operator_profiles_are_installed_and_load_in_the_gateway(applied: dict[str, object]) -> None:
    root = Path(applied["root"])
    assert "GATEWAY_PROFILES_DIR='/etc/aivg/profiles'" in (root / "etc/aivg/gateway.env").read_text()
    loaded = _in_root(str(root), "/opt/aivg/venv/bin/python", "-c",
                      "from pathlib import Path; from gateway.profiles import load_profiles; "
                      "print(sorted(load_profiles(Path('/etc/aivg/profiles'), 'front-desk').profiles))")
    assert loaded.stdout.strip() == "['briefing', 'coach', 'front-desk', 'notes', 'sales']", loaded.stderr


def test_gateway_settings_and_units(applied: dict[str, object]) -> None:
    root = Path(applied["root"])
    env = root / "etc" / "aivg" / "gateway.env"
    text = env.read_text()
    assert "GATEWAY_MEDIA_HOST='10.0.0.10'" in text
    # PII redaction is on unless the operator turns it off.
    assert "GATEWAY_LOG_REDACT_PII='true'" in text
    assert '"fs1": "10.0.0.21:8021:esl-test-secret"' in text
    assert env.stat().st_mode & 0o777 == 0o640
    # The gateway's own settings parser accepts the file it will run with.
    parsed = _in_root(str(root), "/usr/bin/env", "GATEWAY_ENV_FILE=/etc/aivg/gateway.env",
                      "/opt/aivg/venv/bin/python", "-c",
                      "from gateway.settings import load_settings as l; print(sorted(l().esl_workers))")
    assert parsed.stdout.strip() == "['fs1', 'fs2']", parsed.stderr
    unit = (root / "etc/systemd/system/gateway.service").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=always", "User=gateway"):
        assert line in unit
    enabled = root / "etc/systemd/system/multi-user.target.wants/gateway.service"
    assert enabled.is_symlink()
    # systemd's own reading of the unit: valid, and its sandbox rated "OK" (exposure below 2 of 10).
    verified = _in_root(str(root), "systemd-analyze", "verify", "--man=no", "gateway.service",
                        "gateway-model.service")
    assert verified.returncode == 0, verified.stderr
    security = _in_root(str(root), "systemd-analyze", "security", "--offline=true", "gateway.service")
    exposure = re.search(r"Overall exposure level for gateway\.service: ([0-9.]+)", security.stdout)
    assert exposure and float(exposure[1]) < 2.0, security.stdout[-800:]
    user = _in_root(str(root), "getent", "passwd", "gateway")
    assert user.stdout.rstrip().endswith(":/usr/sbin/nologin")


def test_firewall_admits_sip_only_from_trunks_and_private_services_only_from_private_networks(
        applied: dict[str, object]) -> None:
    rules = (Path(applied["root"]) / "etc" / "nftables.conf").read_text()
    assert "policy drop;" in rules
    # The host is in edge AND gateways: it gets both groups' rules (SIP only from the trunks).
    assert re.search(r"ip saddr \{ 54\.172\.60\.0/30, [^}]* \} udp dport 5060 accept", rules), rules
    assert not re.search(r"^\s*(tcp|udp) dport", rules, re.M), rules
    assert "ip saddr { 10.0.0.21, 10.0.0.22 } tcp dport 8090 accept" in rules
    assert "ip saddr { 10.0.0.0/24 } tcp dport 8091 accept" in rules
    checked = _in_root(applied["root"], "nft", "-c", "-f", "/etc/nftables.conf")
    if checked.returncode != 0 and "Operation not permitted" in checked.stderr:
        pytest.skip("no netfilter access here to check the ruleset")
    assert checked.returncode == 0, checked.stderr


def test_node_exporter_is_installed_and_listens_on_the_private_address(applied: dict[str, object]) -> None:
    root = applied["root"]
    got = _in_root(root, "dpkg-query", "-W", "-f=${Status}", "prometheus-node-exporter")
    assert got.stdout == "install ok installed"
    args = (Path(root) / "etc" / "default" / "prometheus-node-exporter").read_text()
    assert "--web.listen-address=10.0.0.10:9100" in args


def test_dispatcher_command_is_installed_with_its_settings(applied: dict[str, object]) -> None:
    root = Path(applied["root"])
    wrapper = root / "usr" / "local" / "bin" / "dispatcher"
    assert wrapper.exists()
    env = (root / "etc" / "aivg" / "dispatcher.env").read_text()
    assert "DISPATCHER_RPC_URL='unix:/run/kamailio/kamailio_rpc.sock'" in env
    if not (ANSIBLE_DIR.parent / "dispatcher" / "cli.py").exists():
        pytest.skip("the dispatcher package has not landed yet")
    helped = _in_root(str(root), "/usr/local/bin/dispatcher", "--help")
    assert helped.returncode == 0, helped.stderr


def _exposure(root: Path, unit: str) -> float:
    got = _in_root(str(root), "systemd-analyze", "security", "--offline=true", unit)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", got.stdout)
    assert found, got.stdout[-800:] + got.stderr[-800:]
    return float(found[1])


def test_kamailio_and_node_exporter_run_sandboxed(applied: dict[str, object]) -> None:
    root = Path(applied["root"])
    # systemd's own rating of the packaged units plus the roles' drop-ins (9.2 "UNSAFE" without them).
    assert _exposure(root, "kamailio.service") < 5.0
    assert _exposure(root, "prometheus-node-exporter.service") < 5.0


def test_journald_keeps_logs_for_a_bounded_time(applied: dict[str, object]) -> None:
    conf = (Path(applied["root"]) / "etc/systemd/journald.conf.d/60-aivg.conf").read_text()
    assert "MaxRetentionSec=14day" in conf and "SystemMaxUse=2G" in conf


def test_each_release_has_its_own_environment_and_the_live_one_is_a_symlink(
        applied: dict[str, object]) -> None:
    root = Path(applied["root"])
    live = root / "opt/aivg/venv"
    assert live.is_symlink()
    target = Path(str(live.readlink()))
    assert target.parent == Path("/opt/aivg/releases"), target
    # Nothing waits for a restart after a fresh apply.
    assert not list((root / "var/lib/aivg/restart-pending").iterdir())


# --- The applied root booted with systemd-nspawn -----------------------------------------------------
# In its own network namespace (--private-network: nothing leaves it), with the inventory's addresses
# put on its loopback by a test-only unit, so the services bind exactly what the play rendered.
BOOT_ADDRESSES = ("203.0.113.10", "10.0.0.10", "10.0.0.21")
SERVICES = ("kamailio", "gateway-model", "gateway", "prometheus-node-exporter")


def _nsenter(leader: int, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "-t", str(leader), "-a", *cmd], text=True, capture_output=True,
                          timeout=timeout, check=False)


def _leader(nspawn: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        got = subprocess.run(["ps", "--ppid", str(nspawn.pid), "-o", "pid="], text=True,
                             capture_output=True, check=False)
        pids = [int(p) for p in got.stdout.split()]
        if pids:
            return pids[0]
        if nspawn.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError("systemd-nspawn started no container")


@pytest.fixture(scope="module")
def booted(applied: dict[str, object], tmp_path_factory: pytest.TempPathFactory):
    if not shutil.which("systemd-nspawn") or not shutil.which("nsenter"):
        pytest.skip("systemd-nspawn (Debian systemd-container) is not installed: the root is not booted")
    root = Path(applied["root"])
    # iproute2 for the test-only address unit (not part of what the play installs).
    got = _in_root(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "iproute2")
    assert got.returncode == 0, got.stderr[-2000:]
    unit = root / "etc/systemd/system/aivg-test-addresses.service"
    before = " ".join(f"{s}.service" for s in SERVICES)
    unit.write_text("[Unit]\nDescription=test only: the inventory's addresses on loopback\n"
                    f"DefaultDependencies=no\nBefore=network-online.target {before}\n\n"
                    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                    + "".join(f"ExecStart=/usr/sbin/ip addr add {a}/32 dev lo\n" for a in BOOT_ADDRESSES)
                    + "\n[Install]\nWantedBy=multi-user.target\n")
    wants = root / "etc/systemd/system/multi-user.target.wants/aivg-test-addresses.service"
    wants.parent.mkdir(parents=True, exist_ok=True)
    if not wants.exists():
        wants.symlink_to("/etc/systemd/system/aivg-test-addresses.service")
    (root / "etc/hostname").write_text("appliance\n")
    log = tmp_path_factory.mktemp("boot") / "console.log"
    with log.open("wb") as out:
        nspawn = subprocess.Popen(["systemd-nspawn", "-q", "--register=no", "--keep-unit",
                                   "--private-network", "--console=passive", "-D", str(root), "-b"],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        leader = _leader(nspawn, time.monotonic() + 60)
        # Boot done (running, or degraded: a container has no clock for chrony to set, no netfilter ...).
        deadline = time.monotonic() + 180
        state = ""
        while time.monotonic() < deadline:
            state = _nsenter(leader, "systemctl", "is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                break
            if nspawn.poll() is not None:
                pytest.fail(f"the container stopped: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        if state not in ("running", "degraded"):
            pytest.skip(f"the root did not finish booting here (state {state!r}): not proven in this run")
        yield {"leader": leader, "root": root, "log": log}
    finally:
        nspawn.terminate()
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(nspawn.pid, signal.SIGKILL)
            nspawn.wait(timeout=10)


def _active(booted: dict[str, object], service: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _nsenter(booted["leader"], "systemctl", "is-active", service).stdout.strip()
        if state == "active":
            return state
        time.sleep(1)
    status = _nsenter(booted["leader"], "systemctl", "status", "--no-pager", "-l", service)
    journal = _nsenter(booted["leader"], "journalctl", "--no-pager", "-n", "40", "-u", service)
    return f"{state}\n{status.stdout[-2000:]}\n{journal.stdout[-3000:]}"


def test_booted_root_runs_every_service_under_its_sandbox(booted: dict[str, object]) -> None:
    for service in SERVICES:
        assert _active(booted, service) == "active", service


def test_booted_kamailio_answers_options_from_a_worker_with_200(booted: dict[str, object]) -> None:
    assert _active(booted, "kamailio") == "active"
    # Not /tmp: the booted container mounts its own /tmp over the root's.
    script = Path(booted["root"]) / "root/sip-options-ping.py"
    shutil.copy2(ANSIBLE_DIR / "files" / "sip-options-ping.py", script)
    got = _nsenter(booted["leader"], "python3", "/root/sip-options-ping.py", "10.0.0.10", "5062",
                   "--source", "10.0.0.21", "--attempts", "15", "--timeout", "2")
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.startswith("SIP/2.0 200")


def _http_get(booted: dict[str, object], url: str, attempts: int = 60) -> tuple[int, str]:
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
            " print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code)\n"
            "except OSError as e:\n print(0); print(e)\n")
    last = (0, "")
    for _ in range(attempts):
        got = _nsenter(booted["leader"], "python3", "-c", code, url)
        status, _, body = got.stdout.partition("\n")
        last = (int(status or 0), body)
        if last[0] == 200:
            return last
        time.sleep(1)
    return last


def test_booted_gateway_is_ready(booted: dict[str, object]) -> None:
    assert _active(booted, "gateway") == "active"
    status, body = _http_get(booted, "http://10.0.0.10:8091/readyz")
    assert status == 200, body
    assert body.strip() == "ready"


def test_booted_node_exporter_serves_metrics_from_its_sandbox(booted: dict[str, object]) -> None:
    assert _active(booted, "prometheus-node-exporter") == "active"
    status, body = _http_get(booted, "http://10.0.0.10:9100/metrics")
    assert status == 200
    # /proc is still readable inside the sandbox: load and memory metrics are there.
    for metric in ("node_load1 ", "node_memory_MemAvailable_bytes "):
        assert metric in body, metric
