"""The agent profiles shipped in gateway/profiles/ are a contract between three parts: the gateway reads
them, the embedded engine reads their `dialogue`, and the FreeSWITCH dialplan names profiles (the AI coach
leg of a conference) in vars.xml. A profile one side rejects, or a name the dialplan uses that no file
defines, would only show up on a live call."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.engine.profiles import load_profiles as load_engine_profiles
from gateway.profiles import load_profiles
from gateway.settings import DEFAULT_PROFILES_DIR

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_profile_loads_in_the_gateway_and_in_the_engine():
    files = {p.stem for p in DEFAULT_PROFILES_DIR.glob("*.yaml")}
    gateway_side = load_profiles(DEFAULT_PROFILES_DIR, "front-desk").profiles
    engine_side = load_engine_profiles(DEFAULT_PROFILES_DIR)
    assert set(gateway_side) == set(engine_side) == files


def dialplan_profile_names() -> set[str]:
    """Agent profiles the FreeSWITCH tree can put in the stream metadata."""
    conf = REPO / "freeswitch-conf"
    names = set(re.findall(r'data="coach_profile=([\w-]+)"', (conf / "vars.xml").read_text()))
    for xml in (conf / "gateway-profiles").glob("*.xml"):
        names |= set(re.findall(r'data="ai_profile=([\w-]+)"', xml.read_text()))
    return names


def test_profiles_named_by_the_freeswitch_dialplan_exist():
    named = dialplan_profile_names()
    assert {"coach", "front-desk"} <= named, "the scan found no profile names: it would prove nothing"
    shipped = load_profiles(DEFAULT_PROFILES_DIR, "front-desk").profiles
    assert named - set(shipped) == set(), "the dialplan selects profiles no file defines"


def test_dialled_numbers_route_to_the_same_profile_in_freeswitch_and_in_the_gateway():
    shipped = load_profiles(DEFAULT_PROFILES_DIR, "front-desk")
    for xml in (REPO / "freeswitch-conf" / "gateway-profiles").glob("*.xml"):
        text = xml.read_text()
        (profile,) = re.findall(r'data="ai_profile=([\w-]+)"', text)
        (alternatives,) = re.findall(r'expression="\^\((.*?)\)\$"', text)
        numbers = {n.replace("\\+", "+") for n in alternatives.split("|")}
        assert numbers == set(shipped.profiles[profile].numbers), xml.name
        for number in numbers:
            assert shipped.select(callee=number).name == profile


def test_the_coach_never_greets_and_stays_silent_on_what_it_does_not_know():
    coach = load_engine_profiles(DEFAULT_PROFILES_DIR)["coach"]
    assert coach.greeting is None
    assert coach.dialogue.fallback_reply == ""
