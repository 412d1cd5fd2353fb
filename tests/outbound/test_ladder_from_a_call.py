"""An urgent inbound call after hours: the agent's `escalate` pages the on-call ladder instead of
transferring; the on-call person hears the announcement, presses 1, and is put through to the caller."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from harness import sipp
from harness.rtp import speech_pcmu
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

OPS = {"Authorization": f"Bearer {ADMIN.split(':', 2)[2]}"}
PROFILES = Path(__file__).resolve().parents[2] / "gateway" / "profiles"


def test_escalate_after_hours_pages_on_call_who_acknowledges_and_is_bridged(outpath, tmp_path):
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES, profiles)
    doc = yaml.safe_load((profiles / "front-desk.yaml").read_text())
    doc["schedule"] = {"timezone": "UTC", "hours": {}}  # always after hours
    doc["on_call"] = {"people": [{"name": "Dana", "number": "+15550411"}], "leg_timeout_s": 30,
                      "bridge_on_ack": True}
    (profiles / "front-desk.yaml").write_text(yaml.safe_dump(doc))
    path = outpath(gateway_env={"GATEWAY_PROFILES_DIR": str(profiles),
                                "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'records.db'}"})
    call = path.call(wait_bye_s=90)
    assert call.wait_answered(15)
    assert call.wait_speech(since=call.answered, min_s=2.5, timeout=25, quiet_s=1.0) is not None
    uuid = httpx.get(f"{path.gateway.admin_url}/calls", headers=OPS, timeout=10).json()[0]["uuid"]
    # The embedded engine asks before an action with consequences (issue 18).
    assert call.ask_and_confirm(speech_pcmu("I want to talk to a human."), speech_pcmu("Yes, please.")) \
        is not None, "the agent did not ask before escalating"

    invite = path.human.wait_received("INVITE", 30)
    assert invite is not None, "the on-call person was never dialled"
    assert invite.first_line.split()[1].startswith("sip:+15550411@"), invite.first_line
    deadline = time.monotonic() + 10
    incident = None
    while incident is None and time.monotonic() < deadline:
        calls = httpx.get(f"{path.gateway.admin_url}/outbound/calls", headers=OPS, timeout=10).json()
        ladder = [c for c in calls if c["purpose"] == "ladder"]
        if ladder:
            incident = ladder[0]["variables"]["incident"]
        time.sleep(0.1)
    assert incident is not None
    run = httpx.get(f"{path.gateway.admin_url}/incidents/{incident}", headers=OPS, timeout=10).json()
    assert run["call"] == uuid and run["callback"] == "15550001111", run
    assert call.sipp.proc.poll() is None, "the caller was hung up"

    # Dana answers, hears the announcement and presses 1.
    assert sipp.learn_remote_media(path.human, path.human_rtp, timeout=10)
    t0 = time.monotonic()
    heard = 0.0
    while heard < 3.0 and time.monotonic() < t0 + 25:
        time.sleep(0.2)
        heard = path.human_rtp.speech_seconds(since=t0 - 2)
    assert heard >= 3.0, f"the on-call person heard {heard:.1f} s of announcement"
    path.human_rtp.send_dtmf_pcap("1")
    deadline = time.monotonic() + 15
    while run["state"] == "paging" and time.monotonic() < deadline:
        time.sleep(0.2)
        run = httpx.get(f"{path.gateway.admin_url}/incidents/{incident}", headers=OPS, timeout=10).json()
    assert run["state"] == "acknowledged" and run["acknowledged_by"] == "Dana", run
    assert run["bridged"], run["events"]

    # Bridged: the caller hears Dana.
    time.sleep(1.0)
    t = time.monotonic()
    path.human_rtp.say(speech_pcmu("Hello, this is Dana, the engineer on call."))
    assert call.wait_speech(since=t, min_s=1.0, timeout=10, quiet_s=0.3) is not None, \
        "the caller does not hear the on-call person"
    # The steps are in the caller's call record too (the records store is on).
    deadline = time.monotonic() + 10
    ladder: list = []
    while time.monotonic() < deadline and not any(e["data"].get("type") == "ladder.acknowledged"
                                                  for e in ladder):
        record = httpx.get(f"{path.gateway.admin_url}/records/{uuid}", headers=OPS, timeout=10)
        if record.status_code == 200:
            ladder = [e for e in record.json().get("events", []) if e["kind"] == "ladder"]
        time.sleep(0.2)
    kinds = [e["data"]["type"] for e in ladder]
    assert "ladder.leg_dialled" in kinds and "ladder.acknowledged" in kinds, kinds
