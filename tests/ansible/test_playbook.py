"""The playbook as an operator meets it: it lints clean (production profile), parses, documents every
vault secret it uses, and refuses bad inventories before it changes anything."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from aivg_ansible_support import ANSIBLE_DIR, ansible_env, run, tool

EXAMPLE = ANSIBLE_DIR / "inventories" / "example"


def test_ansible_lint_production_profile_passes(tmp_path: Path, collections_ready: None) -> None:
    got = run([tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
              env=ansible_env(tmp_path), timeout=600)
    assert got.returncode == 0, got.stdout[-5000:] + got.stderr[-3000:]


def test_site_playbook_syntax_check_passes(tmp_path: Path, collections_ready: None) -> None:
    got = run([tool("ansible-playbook"), "-i", "inventories/example", "--syntax-check", "site.yml"],
              env=ansible_env(tmp_path))
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]


ROLES = ("common", "kamailio", "freeswitch", "mod_audio_stream", "gateway", "dispatcher", "monitoring")


def test_every_role_has_its_api_and_phases() -> None:
    for role in ROLES:
        path = ANSIBLE_DIR / "roles" / role
        defaults = yaml.safe_load((path / "defaults" / "main.yml").read_text())
        specs = yaml.safe_load((path / "meta" / "argument_specs.yml").read_text())
        options = specs["argument_specs"]["main"]["options"]
        # Every default is role-prefixed and documented in the argument spec, and vice versa.
        assert all(name.startswith(f"{role}_") for name in defaults), role
        assert set(defaults) == set(options), (role, set(defaults) ^ set(options))
        main = (path / "tasks" / "main.yml").read_text()
        assert "install.yml" in main and "configure.yml" in main, role


def test_every_vault_secret_the_inventory_uses_is_in_the_example_vault_file() -> None:
    used: set[str] = set()
    for path in EXAMPLE.rglob("*.yml"):
        used |= set(re.findall(r"\bvault_[a-z0-9_]+", path.read_text()))
    documented = yaml.safe_load((EXAMPLE / "group_vars" / "all" / "vault.yml.example").read_text())
    assert used, "the example inventory should take its secrets from the vault"
    assert used <= set(documented), used - set(documented)


def _local_play(tmp: Path, play: list[dict], *extra: str) -> tuple[int, str]:
    playbook = tmp / "play.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    secrets = tmp / "secrets.yml"
    secrets.write_text(yaml.safe_dump({
        "vault_esl_password": "esl-test-secret", "vault_stream_token": "stream-test-token",
        "vault_signalwire_token": "pat_test", "vault_openai_api_key": "",
        "vault_gateway_metrics_token": "metrics-test-token-0123",
        "vault_gateway_ops_token": "ops-test-token-0123456",
        "ansible_become": False, "ansible_python_interpreter": sys.executable,
    }))
    got = run([tool("ansible-playbook"), "-i", "inventories/example", "-e", f"@{secrets}", *extra,
               str(playbook)], env=ansible_env(tmp))
    return got.returncode, got.stdout + got.stderr


def test_kamailio_preflight_refuses_an_edge_without_trunk_ranges(tmp_path: Path,
                                                                  collections_ready: None) -> None:
    play = [{
        "name": "Preflight only.",
        "hosts": "edge",
        "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "Run the preflight.", "ansible.builtin.include_role": {
            "name": "kamailio", "tasks_from": "preflight"}}],
    }]
    rc, output = _local_play(tmp_path, play, "-e", '{"kamailio_trunk_addresses": []}')
    assert rc != 0
    assert "kamailio_trunk_addresses (carrier signalling CIDRs)" in output


def test_mod_audio_stream_preflight_refuses_an_upstream_module_in_stream_mode(
        tmp_path: Path, collections_ready: None) -> None:
    play = [{
        "name": "Preflight only.",
        "hosts": "workers",
        "connection": "local",
        "gather_facts": False,
        "tasks": [{"name": "Run the preflight.", "ansible.builtin.include_role": {
            "name": "mod_audio_stream", "tasks_from": "preflight"}}],
    }]
    overrides = '{"mod_audio_stream_variant": "upstream", "mod_audio_stream_playback_mode": "stream"}'
    rc, output = _local_play(tmp_path, play, "-e", overrides)
    assert rc != 0
    assert "cannot stream replies into the call" in output


@pytest.fixture(scope="module")
def rendered_freeswitch_conf(tmp_path_factory: pytest.TempPathFactory, collections_ready: None) -> Path:
    """freeswitch-conf/ rendered by the freeswitch role for each worker of the example inventory."""
    if not (ANSIBLE_DIR.parent / "freeswitch-conf" / "vars.xml").exists():
        pytest.skip("freeswitch-conf/ has not landed yet")
    tmp = tmp_path_factory.mktemp("fsconf")
    out = tmp / "out"
    play = [{
        "name": "Render freeswitch-conf as the freeswitch role does, into a directory.",
        "hosts": "workers",
        "connection": "local",
        "gather_facts": False,
        "vars": {
            "freeswitch_conf_dir": f"{out}/{{{{ inventory_hostname }}}}",
            "freeswitch_conf_owner": "root",
            "freeswitch_conf_group": "root",
            "freeswitch_service_start": False,
        },
        "tasks": [
            {"name": "Check the overrides.",
             "ansible.builtin.include_role": {"name": "freeswitch", "tasks_from": "preflight_conf"}},
            {"name": "Render.", "ansible.builtin.include_role": {"name": "freeswitch", "tasks_from": "conf"}},
        ],
    }]
    extra: list[str] = []
    if 'data="ext_rtp_ip=' not in (ANSIBLE_DIR.parent / "freeswitch-conf" / "vars.xml").read_text():
        # freeswitch-conf/vars.xml without the NAT variables (before the real-FreeSWITCH work lands): the
        # role refuses the example's public addresses (test_preflight.py), so render without them.
        no_nat = {"freeswitch_ext_rtp_ip": "", "freeswitch_ext_sip_ip": "", "freeswitch_behind_nat": False}
        extra = ["-e", json.dumps(no_nat)]
    rc, output = _local_play(tmp, play, *extra)
    assert rc == 0, output[-5000:]
    return out


def test_rendered_freeswitch_conf_is_well_formed_xml(rendered_freeswitch_conf: Path) -> None:
    files = sorted(rendered_freeswitch_conf.rglob("*.xml"))
    assert files
    got = run(["xmllint", "--noout", *map(str, files)], cwd=rendered_freeswitch_conf)
    assert got.returncode == 0, got.stderr


def test_every_freeswitch_variable_used_is_defined_in_vars_xml(rendered_freeswitch_conf: Path) -> None:
    for worker in ("fs1", "fs2"):
        root = rendered_freeswitch_conf / worker
        # exec-set: the secrets, read from the service's environment by scripts/secret.sh.
        defined = set(re.findall(r'cmd="(?:exec-)?set"\s+data="([A-Za-z0-9_]+)=',
                                 (root / "vars.xml").read_text()))
        used: set[str] = set()
        for path in root.rglob("*.xml"):
            text = re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S)
            used |= set(re.findall(r"\$\$\{([A-Za-z0-9_]+)\}", text))
        # FreeSWITCH presets these itself (switch_core.c) before vars.xml is read.
        preset = {"base_dir", "conf_dir", "log_dir", "run_dir", "db_dir", "mod_dir", "recordings_dir",
                  "sounds_dir", "storage_dir", "script_dir", "grammar_dir", "certs_dir", "temp_dir",
                  "hostname", "local_ip_v4", "local_ip_v6", "local_mask_v4", "switch_serial",
                  "nat_public_addr", "nat_private_addr", "nat_type", "core_uuid", "data_dir", "htdocs_dir",
                  "cache_dir", "fonts_dir", "images_dir", "localstate_dir", "lib_dir"}
        assert used - defined - preset == set(), (worker, sorted(used - defined - preset))


def _vars(path: Path) -> dict[str, str]:
    return dict(re.findall(r'cmd="set"\s+data="([A-Za-z0-9_]+)=([^"]*)"', path.read_text()))


def test_each_worker_gets_its_own_values_and_no_secret_in_vars_xml(rendered_freeswitch_conf: Path) -> None:
    for worker, address, public, preferred in (("fs1", "10.0.0.21", "198.51.100.21", "10.0.0.31"),
                                               ("fs2", "10.0.0.22", "198.51.100.22", "10.0.0.31")):
        text = (rendered_freeswitch_conf / worker / "vars.xml").read_text()
        values = _vars(rendered_freeswitch_conf / worker / "vars.xml")
        assert values["worker_id"] == worker
        assert values["private_ip"] == address
        # Behind 1:1 NAT: SDP carries the public address, Contact/Via the private one the edge reaches.
        assert values["ext_rtp_ip"] == public
        assert values["ext_sip_ip"] == address
        # The secrets stay out of vars.xml: exec-set reads them from the service's environment file.
        assert "esl-test-secret" not in text and "stream-test-token" not in text
        assert "esl_password" not in values and "stream_token" not in values
        assert 'cmd="exec-set" data="esl_password=' in text
        assert 'cmd="exec-set" data="stream_token=' in text
        # The edge's worker-facing socket, and only the edge may send SIP.
        assert values["kamailio_edge"] == "10.0.0.10:5062"
        assert values["kamailio_acl_cidr"] == "10.0.0.10/32"
        # Streams and readiness probes go to the gateways' media port, this worker's preferred one first.
        assert values["gateway_stream_urls"].split(",")[0] == f"ws://{preferred}:8090/stream"
        assert values["gateway_ready_urls"].split(",")[0] == f"http://{preferred}:8090/readyz"
        assert values["playback_mode"] == "stream"
        # No loopback default survives into a deployment.
        assert not [k for k, v in values.items() if "127.0.0.1" in v], values
    # secret.sh runs from exec-set as the freeswitch user; the Lua scripts ship beside it.
    scripts = rendered_freeswitch_conf / "fs1" / "scripts"
    assert (scripts / "secret.sh").stat().st_mode & 0o777 == 0o750
    assert {p.name for p in scripts.glob("*.lua")} >= {"ai_stream_start.lua", "ai_gateway_watchdog.lua"}


def test_each_worker_prefers_another_gateway_and_falls_back_to_the_rest(
        tmp_path: Path, collections_ready: None) -> None:
    second = tmp_path / "gw2.yml"
    second.write_text(yaml.safe_dump({"all": {"children": {"gateways": {"hosts": {"gw2": {
        "ansible_host": "198.51.100.32", "aivg_private_address": "10.0.0.32"}}}}}}))
    play = [{"name": "Show the workers' gateway lists.", "hosts": "workers", "connection": "local",
             "gather_facts": False, "tasks": [{"name": "Show.", "ansible.builtin.debug": {
                 "msg": "{{ inventory_hostname }}|{{ freeswitch_vars.gateway_stream_urls }}"
                        "|{{ freeswitch_vars.gateway_ready_urls }}"}}]}]
    rc, output = _local_play(tmp_path, play, "-i", str(second))
    assert rc == 0, output[-4000:]
    lists = {m[0]: (m[1], m[2]) for m in re.findall(r"(fs\d)\|([^|\s\"]+)\|([^|\s\"]+)", output)}
    assert lists == {
        "fs1": ("ws://10.0.0.31:8090/stream,ws://10.0.0.32:8090/stream",
                "http://10.0.0.31:8090/readyz,http://10.0.0.32:8090/readyz"),
        "fs2": ("ws://10.0.0.32:8090/stream,ws://10.0.0.31:8090/stream",
                "http://10.0.0.32:8090/readyz,http://10.0.0.31:8090/readyz"),
    }, output[-3000:]


def test_freeswitch_secrets_reach_the_service_only_through_a_root_only_environment_file(
        tmp_path: Path, collections_ready: None) -> None:
    out = tmp_path / "out"
    out.mkdir()
    role = ANSIBLE_DIR / "roles" / "freeswitch"
    play = [{
        "name": "Render the freeswitch role's environment file and systemd drop-in.",
        "hosts": "fs1",
        "connection": "local",
        "gather_facts": False,
        "tasks": [
            {"name": "Load the role's defaults.", "ansible.builtin.include_role": {
                "name": "freeswitch", "tasks_from": "preflight_conf", "public": True}},
            {"name": "Environment file.", "ansible.builtin.template": {
                "src": str(role / "templates" / "freeswitch-secrets.env.j2"),
                "dest": f"{out}/secrets.env", "mode": "0600"}},
            {"name": "Drop-in.", "ansible.builtin.template": {
                "src": str(role / "templates" / "freeswitch-systemd.conf.j2"),
                "dest": f"{out}/10-aivg.conf", "mode": "0644"}},
        ],
    }]
    rc, output = _local_play(tmp_path, play)
    assert rc == 0, output[-4000:]
    env = dict(line.split("=", 1) for line in (out / "secrets.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env == {"FREESWITCH_ESL_PASSWORD": "esl-test-secret",
                   "FREESWITCH_STREAM_TOKEN": "stream-test-token"}
    dropin = (out / "10-aivg.conf").read_text()
    assert "EnvironmentFile=/etc/default/freeswitch-secrets" in dropin
    assert "esl-test-secret" not in dropin
    # The role writes the file root:root 0600 (tasks/configure.yml) and never logs it.
    configure = yaml.safe_load((role / "tasks" / "configure.yml").read_text())
    task = next(t for t in configure
                if t.get("ansible.builtin.template", {}).get("src") == "freeswitch-secrets.env.j2")
    written = task["ansible.builtin.template"]
    assert (written["mode"], written["owner"], written["group"]) == ("0600", "root", "root")
    assert task["no_log"] is True


def test_every_module_freeswitch_conf_loads_has_a_package_in_the_freeswitch_role() -> None:
    modules_conf = ANSIBLE_DIR.parent / "freeswitch-conf" / "autoload_configs" / "modules.conf.xml"
    if not modules_conf.exists():
        pytest.skip("freeswitch-conf/ has not landed yet")
    text = re.sub(r"<!--.*?-->", "", modules_conf.read_text(), flags=re.S)
    loaded = set(re.findall(r'<load\s+module="(mod_[a-z0-9_]+)"', text))
    defaults = yaml.safe_load((ANSIBLE_DIR / "roles" / "freeswitch" / "defaults" / "main.yml").read_text())
    packaged = {p.removeprefix("freeswitch-").replace("-", "_") for p in defaults["freeswitch_packages"]}
    # mod_audio_stream comes from the operator's .deb (mod_audio_stream role), never from SignalWire.
    missing = loaded - packaged - {"mod_audio_stream"}
    assert not missing, f"modules.conf.xml loads {sorted(missing)} but freeswitch_packages lacks them"


_PRE = re.compile(r'<X-PRE-PROCESS\s+cmd="(?P<cmd>[a-z_-]+)"\s+data="(?P<data>[^"]*)"\s*/>')


def _preprocess(path: Path, variables: dict[str, str]) -> str:
    """What FreeSWITCH's XML pre-processor makes of a file: includes resolved beside the including file
    (the <include> wrapper dropped, comments and XML declarations removed), `set` and `exec-set` lines
    defining $${vars}, and $${vars} substituted in the text that follows."""
    text = re.sub(r"<\?xml[^>]*\?>", "", path.read_text())
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    out: list[str] = []
    pos = 0
    for match in _PRE.finditer(text):
        out.append(_expand(text[pos:match.start()], variables))
        pos = match.end()
        if match["cmd"] == "set":
            name, _, value = match["data"].partition("=")
            variables[name] = _expand(value, variables)
        elif match["cmd"] == "exec-set":
            # The command's output (scripts/secret.sh prints the secret from the environment).
            name, _, _command = match["data"].partition("=")
            variables[name] = "secret-from-the-environment"
        elif match["cmd"] == "include":
            for included in sorted(path.parent.glob(match["data"])):
                body = _preprocess(included, variables)
                out.append(re.sub(r"^\s*<include>|</include>\s*$", "", body.strip()))
    out.append(_expand(text[pos:], variables))
    return "".join(out)


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\$\{([A-Za-z0-9_]+)\}", lambda m: variables.get(m[1], m[0]), text)


def test_freeswitch_reads_one_well_formed_document_with_every_variable_resolved(
        rendered_freeswitch_conf: Path, tmp_path: Path) -> None:
    for worker, address in (("fs1", "10.0.0.21"), ("fs2", "10.0.0.22")):
        # conf_dir and the other directories are FreeSWITCH's own (switch_core.c), set before vars.xml.
        document = _preprocess(rendered_freeswitch_conf / worker / "freeswitch.xml",
                               {"conf_dir": "/etc/freeswitch", "script_dir": "/usr/share/freeswitch/scripts"})
        assert "$${" not in document, re.findall(r"\$\$\{[^}]*\}", document)
        expanded = tmp_path / f"{worker}.fsxml"
        expanded.write_text(document)
        got = run(["xmllint", "--noout", str(expanded)], cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        # The worker's own address is what its event socket and SIP profile bind to.
        assert f'name="listen-ip" value="{address}"' in document


def test_rendered_gateway_env_carries_the_new_settings_and_the_gateway_accepts_it(
        tmp_path: Path, collections_ready: None) -> None:
    env_file = tmp_path / "gateway.env"
    role = ANSIBLE_DIR / "roles" / "gateway"
    play = [{
        "name": "Render gateway.env for the example gateway.",
        "hosts": "gw1",
        "connection": "local",
        "gather_facts": False,
        "vars": {"gateway_engine_tokens": ["engine-test-token-0123"]},
        "tasks": [
            {"name": "Preflight (loads the defaults).", "ansible.builtin.include_role": {
                "name": "gateway", "tasks_from": "preflight", "public": True}},
            {"name": "Render.", "ansible.builtin.template": {
                "src": str(role / "templates" / "gateway.env.j2"), "dest": str(env_file), "mode": "0600"}},
        ],
    }]
    rc, output = _local_play(tmp_path, play)
    assert rc == 0, output[-4000:]
    text = env_file.read_text()
    assert "metrics-test-token-0123" not in output and "ops-test-token-0123456" not in output
    assert ("GATEWAY_ADMIN_TOKENS='prometheus:metrics:metrics-test-token-0123,"
            "ops:control:ops-test-token-0123456'") in text
    assert "GATEWAY_ADMIN_HOST='10.0.0.31'" in text
    # The embedded engine accepts the token; the gateway sends it as its bearer.
    assert "GATEWAY_ENGINE_TOKENS='engine-test-token-0123'" in text
    assert "GATEWAY_OPENAI_API_KEY='engine-test-token-0123'" in text
    assert "GATEWAY_MODEL_URL='ws://127.0.0.1:8092/v1'" in text
    for line in ("GATEWAY_MAX_STREAMS_PER_SOURCE='1000'", "GATEWAY_STREAM_RATE_PER_SOURCE='50'",
                 "GATEWAY_STREAM_BURST_PER_SOURCE='100'", "GATEWAY_UPGRADE_HEADER_TIMEOUT_S='5'",
                 "GATEWAY_MODEL_PROBE_INTERVAL_S='2'", "GATEWAY_MODEL_PROBE_TIMEOUT_S='1'"):
        assert line in text, line
    assert "GATEWAY_TWILIO" not in text  # off without an auth token
    # The repository's gateway parses the file as systemd would hand it over (the role's validate step).
    got = run([sys.executable, "-c",
               "from gateway.settings import load_settings; s = load_settings();"
               "print(sorted(s.esl_workers), s.model_url, s.admin_host)"],
              env={"GATEWAY_ENV_FILE": str(env_file), "PATH": "/usr/bin:/bin"})
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split() == ["['fs1',", "'fs2']", "ws://127.0.0.1:8092/v1", "10.0.0.31"], got.stdout


def test_scrape_jobs_cover_every_node_gateway_and_edge_of_the_inventory(
        tmp_path: Path, collections_ready: None) -> None:
    snippet = tmp_path / "aivg-scrape.yml"
    play = [{
        "name": "Write the scrape jobs on the controller only.",
        "hosts": "all",
        "connection": "local",
        "gather_facts": False,
        "vars": {"monitoring_node_exporter_enabled": False, "monitoring_prometheus_enabled": False,
                 "monitoring_scrape_snippet_dest": str(snippet)},
        "tasks": [{"name": "Configure.", "ansible.builtin.include_role": {
            "name": "monitoring", "tasks_from": "configure"}}],
    }]
    rc, output = _local_play(tmp_path, play)
    assert rc == 0, output[-4000:]
    jobs = {job["job_name"]: job for job in yaml.safe_load(snippet.read_text())["scrape_configs"]}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    assert sorted(targets["node"]) == sorted(
        f"10.0.0.{n}:9100" for n in (10, 21, 22, 31, 40))
    assert targets["gateway"] == ["10.0.0.31:8091"]
    # The gateways' /metrics takes a metrics-scoped admin token, read from a file Prometheus can read.
    assert jobs["gateway"]["authorization"] == {
        "type": "Bearer", "credentials_file": "/etc/prometheus/aivg-gateway-metrics.token"}
    assert targets["kamailio"] == ["10.0.0.10:5080"]


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        ({}, ["[198.51.100.10]:5060 name carrier_udp", "[10.0.0.10]:5062 name workers"]),
        ({"kamailio_tls_enabled": True, "kamailio_topoh_enabled": True,
          "kamailio_topoh_mask_key": "edge-mask-key-0123", "kamailio_advertise_address": "203.0.113.7"},
         ["[198.51.100.10]:5061 name carrier_tls advertise 203.0.113.7:5061"]),
    ],
    ids=["plain", "tls-topoh-nat"],
)
def test_rendered_kamailio_local_cfg_passes_kamailio_check_with_the_repository_cfg(
        tmp_path: Path, collections_ready: None, switches: dict, expected: list[str]) -> None:
    kamailio_cfg = ANSIBLE_DIR.parent / "kamailio-conf" / "kamailio.cfg"
    if not shutil.which("kamailio"):
        pytest.skip("kamailio is not installed (requirements/apt.txt)")
    if switches.get("kamailio_tls_enabled"):
        made = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=edge", "-keyout", str(tmp_path / "edge.key"),
                    "-out", str(tmp_path / "edge.pem")], cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        switches = {**switches, "kamailio_tls_certificate_src": str(tmp_path / "edge.pem"),
                    "kamailio_tls_private_key_src": str(tmp_path / "edge.key")}
    rendered = tmp_path / "kamailio-local.cfg"
    play = [{
        "name": "Render kamailio-local.cfg for the example edge.",
        "hosts": "edge",
        "connection": "local",
        "gather_facts": False,
        "vars": switches,
        "tasks": [
            {"name": "Load the role's defaults and build the worker list.",
             "ansible.builtin.include_role": {"name": "kamailio", "tasks_from": "preflight", "public": True}},
            {"name": "Render.", "ansible.builtin.template": {
                "src": str(ANSIBLE_DIR / "roles" / "kamailio" / "templates" / "kamailio-local.cfg.j2"),
                "dest": str(rendered), "mode": "0644"}},
        ],
    }]
    rc, output = _local_play(tmp_path, play)
    assert rc == 0, output[-4000:]
    checker = ANSIBLE_DIR / "roles" / "kamailio" / "files" / "kamailio-cfg-check"
    got = run(["sh", str(checker), str(rendered), "kamailio-local.cfg", str(kamailio_cfg.parent)],
              cwd=tmp_path)
    assert got.returncode == 0, got.stdout + got.stderr
    for listen in expected:
        assert listen in got.stdout + got.stderr


def test_profile_checker_refuses_a_broken_agent_profile_and_accepts_the_packaged_ones(tmp_path: Path) -> None:
    checker = ANSIBLE_DIR / "roles" / "gateway" / "files" / "gateway-profile-check.py"
    for good in sorted((ANSIBLE_DIR.parent / "gateway" / "profiles").glob("*.yaml")):
        got = run([sys.executable, str(checker), str(good)], cwd=tmp_path)
        assert got.returncode == 0, (good.name, got.stderr[-2000:])
    broken = tmp_path / "broken.yaml"
    profile = yaml.safe_load((ANSIBLE_DIR.parent / "gateway" / "profiles" / "front-desk.yaml").read_text())
    profile["turn_detection"] = {"threshold": "loud"}
    broken.write_text(yaml.safe_dump(profile))
    got = run([sys.executable, str(checker), str(broken)], cwd=tmp_path)
    assert got.returncode != 0
    assert "threshold" in got.stderr
