"""AMD on the real FreeSWITCH: the callee's side plays an espeak-ng greeting into the call. A person
("Hello?") then hears the agent's greeting; a machine (long greeting + beep) hears nothing over its
greeting, the profile's message after the beep, and the call ends."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml
from amd_audio import MACHINE_GREETING, beep, human, machine, spoken
from callees import swap_callee
from harness import sipp
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

OPS = {"Authorization": f"Bearer {ADMIN.split(':', 2)[2]}"}
PROFILES = Path(__file__).resolve().parents[2] / "gateway" / "profiles"
MESSAGE = ("This is Riverside Dental returning your call. "
           "Please call us back on five five five, zero one hundred.")


def path_with_amd(outpath, tmp_path, on_machine: str):
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES, profiles)
    doc = yaml.safe_load((profiles / "front-desk.yaml").read_text())
    doc["amd"] = {"greeting_max_ms": 1500, "on_machine": on_machine, "message": MESSAGE}
    (profiles / "front-desk.yaml").write_text(yaml.safe_dump(doc))
    return outpath(gateway_env={"GATEWAY_PROFILES_DIR": str(profiles)})


def dial_and_wait_live(path) -> str:
    r = httpx.post(f"{path.gateway.admin_url}/calls", headers=OPS, json={"to": "+15550500"}, timeout=10)
    assert r.status_code == 202, r.text
    call_id = r.json()["id"]
    assert path.human.wait_received("INVITE", 15) is not None
    assert sipp.learn_remote_media(path.human, path.human_rtp, timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = httpx.get(f"{path.gateway.admin_url}/calls/{call_id}", headers=OPS, timeout=10).json()
        if info.get("live"):
            return call_id
        time.sleep(0.05)
    raise AssertionError(f"the answered call never reached the agent: {info}")


def test_a_person_saying_hello_hears_the_agent(outpath, tmp_path):
    path = path_with_amd(outpath, tmp_path, "hangup")
    swap_callee(path)
    call_id = dial_and_wait_live(path)
    start = time.monotonic()
    path.human_rtp.say(human())
    hello_end = start + (0.4 * 8000 + len(spoken("Hello?"))) / 8000
    heard = 0.0
    deadline = time.monotonic() + 15
    while heard < 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
        heard = path.human_rtp.speech_seconds(since=hello_end)
    assert heard >= 2.0, f"the person heard {heard:.1f} s of the agent after saying hello"
    live = httpx.get(f"{path.gateway.admin_url}/calls/{call_id}", headers=OPS, timeout=10).json()["live"]
    assert live["amd"]["kind"] == "human", live
    httpx.post(f"{path.gateway.admin_url}/calls/{call_id}/hangup", headers=OPS, timeout=10)


def test_a_machine_gets_the_message_after_the_beep_and_the_call_ends(outpath, tmp_path):
    path = path_with_amd(outpath, tmp_path, "message")
    swap_callee(path)
    call_id = dial_and_wait_live(path)
    start = time.monotonic()
    path.human_rtp.say(machine())
    beep_end = start + (0.4 * 8000 + len(spoken(MACHINE_GREETING)) + 0.3 * 8000 + len(beep())) / 8000
    # The whole greeting and beep: the agent must not speak over it.
    info = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = httpx.get(f"{path.gateway.admin_url}/calls/{call_id}", headers=OPS, timeout=10).json()
        if info["state"] == "completed":
            break
        time.sleep(0.2)
    assert info["state"] == "completed", info
    over_greeting = path.human_rtp.speech_seconds(since=start, until=beep_end)
    message = path.human_rtp.speech_seconds(since=beep_end)
    first = path.human_rtp.first_speech_after(beep_end)
    print(f"\nagent speech during the greeting {over_greeting:.2f} s; message {message:.1f} s, "
          f"starting {first - beep_end if first else -1:.2f} s after the beep")
    assert over_greeting < 0.2, "the agent talked over the machine's greeting"
    assert message >= 3.0, f"the machine recorded {message:.1f} s of message"
    assert path.human.wait(15) is not None, "the call was not hung up after the message"


