"""The after-hours ladder on the real FreeSWITCH: the primary does not answer within the leg timeout, so
the secondary is rung; the secondary hears the announcement and presses 1; the ladder stops there and
records who acknowledged."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
from callees import answering_except, invites, swap_callee
from harness import sipp
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

OPS = {"Authorization": f"Bearer {ADMIN.split(':', 2)[2]}"}
PROFILES = Path(__file__).resolve().parents[2] / "gateway" / "profiles"

AFTER_HOURS = """
name: after-hours
instructions: You answer the after-hours line of Riverside Dental.
greeting: Riverside Dental after-hours line.
numbers: ["+15550009000"]
tools: [escalate]
schedule:
  timezone: Europe/London
  hours: {}            # never open: every call is after hours
on_call:
  people:
    - {name: Primary, number: "+15550401"}
    - {name: Secondary, number: "+15550402"}
    - {name: Primary again, number: "+1 555 0401"}
    - {name: Fallback, number: "+15550403"}
  leg_timeout_s: 10
  announce_profile: front-desk
  bridge_on_ack: false
"""


def test_primary_times_out_secondary_presses_1_and_the_ladder_records_it(outpath, tmp_path):
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES, profiles)
    (profiles / "after-hours.yaml").write_text(AFTER_HOURS)
    path = outpath(gateway_env={"GATEWAY_PROFILES_DIR": str(profiles)})
    callee = swap_callee(path, answering_except(path, "+15550401"), calls=2)
    r = httpx.post(f"{path.gateway.admin_url}/incidents", headers=OPS, timeout=10,
                   json={"profile": "after-hours", "summary": "The water pipe burst in the surgery",
                         "callback": "+15550123"})
    assert r.status_code == 202, r.text
    incident = r.json()["id"]

    def state() -> dict:
        return httpx.get(f"{path.gateway.admin_url}/incidents/{incident}", headers=OPS, timeout=10).json()

    deadline = time.monotonic() + 30
    while len(invites(callee)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    got = invites(callee)
    assert [u for _, u in got] == ["+15550401", "+15550402"], got
    # The secondary is rung only after the primary's leg timed out (never two legs at once).
    assert got[1][0] - got[0][0] >= 9.0, got
    first = state()["steps"][0]
    assert first["person"] == "Primary" and first["result"] in ("no_answer", "timeout"), state()

    # The secondary answers and hears the announcement, then presses 1.
    # FreeSWITCH's media address for this leg: the SDP of the latest INVITE (the primary's came first)
    media = sipp.sdp_media(callee.received("INVITE")[-1].body)
    assert media is not None
    path.human_rtp.set_remote(*media)
    t0 = time.monotonic()
    heard = 0.0
    while heard < 3.0 and time.monotonic() < t0 + 25:
        time.sleep(0.2)
        heard = path.human_rtp.speech_seconds(since=t0 - 2)
    assert heard >= 3.0, f"the secondary heard {heard:.1f} s of announcement"
    path.human_rtp.send_dtmf_pcap("1")

    deadline = time.monotonic() + 15
    run = state()
    while run["state"] == "paging" and time.monotonic() < deadline:
        time.sleep(0.2)
        run = state()
    assert run["state"] == "acknowledged", run
    assert run["acknowledged_by"] == "Secondary", run
    assert [s["result"] for s in run["steps"]][1] == "acknowledged", run["steps"]
    kinds = [e["type"] for e in run["events"]]
    assert kinds.count("ladder.leg_dialled") == 2 and "ladder.acknowledged" in kinds, kinds
    assert "ladder.skipped" not in kinds  # the repeated primary comes after the acknowledgement
    # It stopped there: neither the repeated primary nor the fallback is dialled.
    time.sleep(3.0)
    assert len(invites(callee)) == 2, invites(callee)
    assert len(run["steps"]) == 2, run["steps"]
    assert path.fs.wait_channels(0, timeout=10) == 0
