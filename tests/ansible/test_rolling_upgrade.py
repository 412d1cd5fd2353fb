"""upgrade.yml's sequence under load, on real components: not one call may fail.

Kamailio with the repository cfg (tests/kamailio harness), two real FreeSWITCH workers with
freeswitch-conf/ (tests/harness, the shared 1.10.12 build) loading the project's patched mod_audio_stream
(packaging/mod_audio_stream/build-deb.sh, the package the mod_audio_stream role installs by default),
and two gateways (`gateway
serve` + `gateway model` as processes), worker fsN streaming to gateway gwN as the example inventory
spreads them. SIPp places calls through the edge the whole time while the test runs upgrade.yml's own
task files (ansible/tasks/drain-workers.yml, enable-workers.yml: the real `dispatcher` CLI, `--wait`
until FreeSWITCH reports zero calls, re-enabled only once OPTIONS get 200) around each restart:
  workers   one at a time: drain, FreeSWITCH restarted, health-checked, re-enabled;
  gateways  one at a time: its workers drained, `gateway serve` restarted first, then the engine,
            /readyz 200, workers re-enabled.
The edge restart (one edge at a time behind the carrier's failover) is not part of this test: with one
Kamailio and no second carrier route there is nothing to fail over to here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from aivg_ansible_support import ANSIBLE_DIR, CACHE_DIR, REPO, ansible_env, cache_writable, run, tool

sys.path.insert(0, str(REPO / "tests" / "kamailio"))
sys.path.insert(0, str(REPO / "tests"))
from harness.freeswitch import FreeSwitch, freeswitch_binary  # noqa: E402
from harness.net import free_port, wait_tcp  # noqa: E402
from kamailio_harness import KAMAILIO, SIPP, KamailioEdge, Worker, read_stats  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.freeswitch, pytest.mark.timeout(1200)]

# This helper's addresses: workers, gateways, the carrier (SIPp).
FS_HOSTS = {"fs1": "127.0.0.104", "fs2": "127.0.0.105"}
GW_HOSTS = {"gw1": "127.0.0.106", "gw2": "127.0.0.107"}
CARRIER = "127.0.0.108"
TOKEN = "rolling-upgrade-token-0123"
CALL_RATE = 1.0        # calls per second, the whole time
HOLD_MS = 4000         # each call stays up 4 s: every drain has calls in progress to wait for
DRAIN_TIMEOUT_S = 90


@dataclass
class Gateway:
    name: str
    host: str
    workdir: Path
    esl_workers: dict[str, str]
    media_port: int = 0
    admin_port: int = 0
    engine_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.media_port = free_port(self.host, udp=False)
        self.admin_port = free_port(self.host, udp=False)
        self.engine_port = free_port(self.host, udp=False)

    @property
    def stream_url(self) -> str:
        return f"ws://{self.host}:{self.media_port}/stream"

    def _spawn(self, what: str, *args: str) -> None:
        env = {**os.environ, "GATEWAY_ESL_WORKERS": json.dumps(self.esl_workers),
               "GATEWAY_AUTH_TOKENS": TOKEN, "GATEWAY_LOG_LEVEL": "INFO"}
        with (self.workdir / f"{what}.log").open("ab") as out:
            self.procs[what] = subprocess.Popen(
                [sys.executable, "-m", "gateway", *args], cwd=REPO, env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_engine(self) -> None:
        self._spawn("model", "model", "--host", self.host, "--port", str(self.engine_port))
        assert wait_tcp(self.host, self.engine_port, 120), self.tail("model")

    def start_serve(self) -> None:
        self._spawn("serve", "serve", "--media-host", self.host, "--media-port", str(self.media_port),
                    "--admin-host", self.host, "--admin-port", str(self.admin_port),
                    "--model-url", f"ws://{self.host}:{self.engine_port}/v1")
        assert wait_tcp(self.host, self.admin_port, 120), self.tail("serve")

    def stop(self, what: str, timeout: float = 60) -> None:
        proc = self.procs.get(what)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def ready(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.admin_port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def wait_log(self, ok: Callable[[str], bool], what: str = "serve", timeout: float = 60) -> bool:
        path = self.workdir / f"{what}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and ok(path.read_text(errors="replace")):
                return True
            time.sleep(0.3)
        return False

    def tail_count(self, needle: str, what: str = "serve") -> int:
        path = self.workdir / f"{what}.log"
        return path.read_text(errors="replace").count(needle) if path.exists() else 0

    def tail(self, what: str) -> str:
        path = self.workdir / f"{what}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@dataclass
class Appliance:
    edge: KamailioEdge
    workers: dict[str, FreeSwitch]
    gateways: dict[str, Gateway]
    tmp: Path


@pytest.fixture(scope="module")
def patched_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mod_audio_stream.so from the project's .deb, built against the test FreeSWITCH's headers (kept in
    the test cache: build-deb.sh leaves an up-to-date .deb alone)."""
    binary = freeswitch_binary()
    if binary is None:
        pytest.skip("no FreeSWITCH: /work/shared/freeswitch/install.sh (or FREESWITCH_BIN)")
    pcdir = binary.resolve().parent.parent / "lib" / "pkgconfig"
    out = CACHE_DIR / "mod_audio_stream" if cache_writable() else tmp_path_factory.mktemp("moddeb")
    got = run([str(REPO / "packaging/mod_audio_stream/build-deb.sh"), "--out", str(out),
               "--freeswitch-pkgconfig", str(pcdir)], cwd=REPO, timeout=900)
    if got.returncode != 0 and "no default source" in got.stderr:
        pytest.skip(f"no pinned mod_audio_stream source here: {got.stderr.strip()}")
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    deb = Path(got.stdout.strip().splitlines()[-1])
    unpacked = tmp_path_factory.mktemp("moddeb-x")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, timeout=60)
    found = sorted(unpacked.rglob("mod_audio_stream.so"))
    assert found, f"no mod_audio_stream.so in {deb}"
    return found[0]


@pytest.fixture
def appliance(tmp_path: Path, patched_module: Path) -> Iterator[Appliance]:
    if freeswitch_binary() is None:
        pytest.skip("no FreeSWITCH: /work/shared/freeswitch/install.sh (or FREESWITCH_BIN)")
    if not (os.path.exists(KAMAILIO) and os.path.exists(SIPP)):
        pytest.skip("kamailio and sipp are installed by `make test`")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    workers = {name: FreeSwitch(tmp_path / name, host, audio_stream_so=patched_module,
                                vars={"worker_id": name, "stream_token": TOKEN})
               for name, host in FS_HOSTS.items()}
    esl = {name: fs.esl_address for name, fs in workers.items()}
    gateways = {name: Gateway(name, host, tmp_path / name, esl) for name, host in GW_HOSTS.items()}
    edge = KamailioEdge(tmp_path / "edge", carriers=(CARRIER,), worker_group=tuple(FS_HOSTS.values()),
                        workers=[Worker(name, fs.host, fs.sip_port) for name, fs in workers.items()])
    try:
        for fs, gw in zip(workers.values(), gateways.values(), strict=True):
            # Each worker streams to its own gateway and probes that gateway's readiness on the media port
            # (the workers' watchdog pauses inbound while no gateway of theirs is ready).
            fs.set_vars(kamailio_edge=f"127.0.0.1:{edge.private_port}", gateway_stream_urls=gw.stream_url,
                        gateway_ready_urls=f"http://{gw.host}:{gw.media_port}/readyz")
            fs.start()
        for gw in gateways.values():
            gw.start_engine()
            gw.start_serve()
        # Each gateway controls calls over ESL: connected to every worker before the first call.
        for gw in gateways.values():
            assert gw.wait_log(lambda text: all(f'esl connected worker="{n}"' in text for n in workers)), \
                gw.tail("serve")
        # The first stream after a gateway starts is slow enough for mod_audio_stream's connect timeout
        # (cold start): warm each with the test call upgrade.yml places after a restart.
        wav = tmp_path / "warm-up.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), "What are your opening hours?"],
                       check=True, timeout=60)
        for gw, worker in zip(gateways.values(), workers, strict=True):
            call = subprocess.run([sys.executable, "-m", "gateway", "call", str(wav), "--gateway",
                                   f"{gw.host}:{gw.media_port}", "--token", TOKEN, "--worker", worker,
                                   "--reply-timeout", "30"], cwd=REPO, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert call.returncode == 0, call.stdout[-2000:] + gw.tail("serve")
        edge.start()
        for fs in workers.values():
            assert edge.wait_flags(fs.sip_uri, "AP", timeout=30) == "AP", edge.worker_flags()
        for gw in gateways.values():
            assert gw.ready(), gw.tail("serve")
        yield Appliance(edge, workers, gateways, tmp_path)
    finally:
        edge.stop()
        for name, fs in workers.items():
            print(f"\n===== {name} log tail =====\n{fs.log_tail(3000)}")
            fs.stop()
        for gw in gateways.values():
            gw.stop("serve", timeout=20)
            gw.stop("model", timeout=20)


def _ansible_step(app: Appliance, name: str, tasks_file: str, workers: list[str],
                  extra: dict[str, object] | None = None) -> float:
    """Run one of upgrade.yml's task files for `workers`, the edge being this machine. Returns seconds."""
    tmp = app.tmp / f"ansible-{name}"
    tmp.mkdir(parents=True, exist_ok=True)
    inventory = tmp / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"edge": {"hosts": {"edge1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))
    play = [{"name": name, "hosts": "edge", "gather_facts": False,
             "vars": {"aivg_upgrade_workers": workers,
                      "aivg_dispatcher_command": [sys.executable, "-m", "dispatcher"],
                      "aivg_upgrade_drain_timeout": DRAIN_TIMEOUT_S, "aivg_upgrade_health_timeout": 60,
                      **(extra or {})},
             "tasks": [{"name": "Run upgrade.yml's step.",
                        "ansible.builtin.include_tasks": str(ANSIBLE_DIR / "tasks" / tasks_file)}]}]
    (tmp / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = {**ansible_env(tmp), "DISPATCHER_RPC_URL": app.edge.rpc_url,
           "DISPATCHER_LIST_FILE": str(app.edge.dispatcher_list), "DISPATCHER_RELOAD_DELTA": "1",
           "DISPATCHER_POLL_INTERVAL": "0.5",
           "DISPATCHER_ESL_WORKERS": json.dumps({n: fs.esl_address for n, fs in app.workers.items()})}
    started = time.monotonic()
    got = run([tool("ansible-playbook"), "-i", str(inventory), str(tmp / "play.yml")], env=env,
              timeout=DRAIN_TIMEOUT_S + 120)
    assert got.returncode == 0, got.stdout[-4000:] + got.stderr[-2000:]
    return time.monotonic() - started


def test_rolling_upgrade_under_load_drops_no_call(appliance: Appliance) -> None:
    app = appliance
    csv_path = app.tmp / "carrier.csv"
    # Enough calls for the whole sequence; stopped (gracefully) once it is done.
    carrier = subprocess.Popen(
        [SIPP, app.edge.sip_target, "-sf", str(REPO / "tests/kamailio/scenarios/uac-call-expect-200.xml"),
         "-s", "1000", "-i", CARRIER, "-p", str(free_port(CARRIER)), "-mp", str(free_port(CARRIER, span=4)),
         "-r", str(CALL_RATE), "-m", "600",
         "-d", str(HOLD_MS), "-nostdin", "-trace_stat", "-stf", str(csv_path), "-fd", "1",
         "-trace_err", "-error_file", str(app.tmp / "carrier-errors.log"),
         "-timeout", "900s", "-timeout_error", "-max_socket", "512"],
        cwd=app.tmp, stdout=(app.tmp / "carrier.log").open("ab"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    drains: dict[str, float] = {}
    started = time.monotonic()
    try:
        time.sleep(8)  # calls up on both workers before the first drain
        for name, fs in app.workers.items():
            drains[f"worker {name}"] = _ansible_step(app, f"drain-{name}", "drain-workers.yml", [name])
            assert fs.calls() == 0
            fs.stop()
            fs.start()
            _ansible_step(app, f"enable-{name}", "enable-workers.yml", [name])
            time.sleep(3)
        for (gw_name, gw), worker in zip(app.gateways.items(), app.workers, strict=True):
            drains[f"gateway {gw_name}"] = _ansible_step(app, f"drain-{gw_name}", "drain-workers.yml",
                                                         [worker])
            connected = gw.tail_count("esl connected worker=")
            gw.stop("serve")
            gw.start_serve()
            gw.stop("model")
            gw.start_engine()
            assert gw.ready(), gw.tail("serve")
            # /readyz is up before the gateway's ESL connections: wait for both before its workers return.
            wanted = connected + len(app.workers)
            assert gw.wait_log(lambda text, n=wanted: text.count("esl connected worker=") >= n), \
                gw.tail("serve")
            # upgrade.yml's test call through the restarted gateway and engine (greeting, then an answer).
            _ansible_step(app, f"test-call-{gw_name}", "gateway-test-call.yml", [worker], {
                "aivg_gateway_command": [sys.executable, "-m", "gateway"],
                "aivg_test_call_gateway": f"{gw.host}:{gw.media_port}", "aivg_test_call_token": TOKEN,
                "aivg_test_call_worker": worker, "aivg_test_call_wav": str(app.tmp / "test-call.wav")})
            _ansible_step(app, f"enable-{gw_name}", "enable-workers.yml", [worker])
            time.sleep(3)
        time.sleep(5)  # calls on the re-enabled workers and gateways, too
    finally:
        sequence_s = time.monotonic() - started
        carrier.send_signal(signal.SIGUSR1)  # stop placing calls; let the ones up finish
        try:
            carrier.wait(timeout=HOLD_MS / 1000 + 60)
        except subprocess.TimeoutExpired:
            os.killpg(carrier.pid, signal.SIGKILL)
            carrier.wait(timeout=10)
    stats = read_stats(csv_path, carrier.returncode)
    placed = stats.successful + stats.failed
    print(f"rolling upgrade: {placed} calls placed, {stats.failed} failed, sequence {sequence_s:.0f}s, "
          "drains: " + ", ".join(f"{k} {v:.1f}s" for k, v in drains.items()))
    assert placed >= 30, (stats, (app.tmp / "carrier.log").read_text()[-3000:])
    errors = app.tmp / "carrier-errors.log"  # each unexpected message, with the SIP it got
    assert stats.failed == 0, (stats, errors.read_text()[-6000:] if errors.exists() else "",
                               (app.tmp / "carrier.log").read_text()[-3000:])
    # Both workers and both gateways took calls after coming back (the dispatcher list says active).
    flags = app.edge.worker_flags()
    assert all(flags[fs.sip_uri].startswith("A") for fs in app.workers.values()), flags
    log = app.edge.log()
    assert not re.search(r"ERROR:.*dispatcher", log), log[-2000:]
