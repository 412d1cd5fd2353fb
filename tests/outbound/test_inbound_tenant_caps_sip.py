"""Inbound admission per tenant on the whole call path: SIPp carrier -> Kamailio edge -> the real
FreeSWITCH (freeswitch-conf/, the shipped mod_audio_stream build) -> `gateway serve` -> `gateway model`.

Tenant acme (number 1000, `max_inbound: 1`) floods: its second call is refused exactly as a call at the
gateway's global cap is (503 on the stream's upgrade, the worker's ai_stream_start.lua gives up, SIP 503
before answer), while tenant globex's call (number 2000) is answered and the caller hears its greeting."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from harness.callpath import Addresses, CallPath
from harness.procs import GatewayModel

from gateway.settings import DEFAULT_PROFILES_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
from fsmod_support import have_freeswitch, patched_module_so  # noqa: E402

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

IPS = [f"127.0.8.{i}" for i in range(30, 45)]  # this helper's range
MODEL_IP = "127.0.8.2"
TENANTS = """
tenants:
  acme:
    profiles: [front-desk]
    numbers: ["1000"]
    max_inbound: 1
  globex:
    profiles: [globex-desk]
    numbers: ["2000"]
"""


def _have_tools() -> bool:
    return bool((shutil.which("kamailio") or Path("/usr/sbin/kamailio").exists()) and shutil.which("sipp")
                and shutil.which("espeak-ng") and shutil.which("sox"))


def test_a_tenants_inbound_flood_is_refused_with_503_while_another_tenant_is_answered_and_greeted(
        tmp_path: Path, freeswitch_factory):
    if not _have_tools() or not have_freeswitch():
        pytest.skip("kamailio, sipp, espeak-ng, sox and FreeSWITCH are installed by `make test`")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
        (profiles / src.name).write_text(src.read_text())
    base = yaml.safe_load((DEFAULT_PROFILES_DIR / "front-desk.yaml").read_text())
    (profiles / "globex-desk.yaml").write_text(yaml.safe_dump(
        base | {"name": "globex-desk", "numbers": ["2000"],
                "greeting": "Thank you for calling Globex. How can I help you today?"}))
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    model = GatewayModel(tmp_path / "model", MODEL_IP, extra=["--profiles-dir", str(profiles)])
    path: CallPath | None = None
    model.start()
    try:
        path = CallPath(tmp_path / "path", Addresses.block(IPS, 1), freeswitch_factory, edition="voxcom",
                        audio_stream_so=patched_module_so(), model=model,
                        gateway_env={"GATEWAY_TENANTS_FILE": str(tmp_path / "tenants.yaml"),
                                     "GATEWAY_PROFILES_DIR": str(profiles)})
        path.start()
        first = path.call("1000", wait_bye_s=90)
        assert first.wait_answered(15), path.logs()
        assert first.wait_speech(since=first.answered, min_s=2.0, timeout=25, quiet_s=0.8) is not None
        # acme's second call: refused before answer, SIP 503 at the carrier (never a 200).
        refused = path.call("1000", expect=503)
        reply = refused.sipp.wait_received("SIP/2.0 503", 30)
        assert reply is not None and reply.first_line.startswith("SIP/2.0 503 Tenant At Capacity"), \
            refused.sipp.errors()
        assert refused.finished(30) == 0, refused.sipp.errors()
        assert "tenant at its inbound cap" in path.gateway.log() and 'tenant="acme"' in path.gateway.log()
        # The edge did not take the refusal for a failed worker: nothing marked down for the others.
        assert "marking it down" not in path.edge.log() and "No Worker Available" not in path.edge.log()
        # globex is not held by acme's flood: answered, and the caller hears globex's greeting.
        other = path.call("2000", wait_bye_s=90)
        assert other.wait_answered(15), path.logs()
        assert other.wait_speech(since=other.answered, min_s=2.0, timeout=25, quiet_s=0.8) is not None, \
            "globex's caller heard no greeting"
        assert other.hangup().startswith("SIP/2.0 200")
        assert first.hangup().startswith("SIP/2.0 200")
    except BaseException:
        if path is not None:
            print(f"\n===== call path logs =====\n{path.logs()}")
        raise
    finally:
        if path is not None:
            path.stop()
        model.stop(timeout=5)
