"""Profiles and settings: selection per call, clear refusals of bad files and values."""

import subprocess
import sys

import pytest

from gateway.profiles import ProfileError, load_profiles
from gateway.settings import DEFAULT_PROFILES_DIR, Settings


def test_shipped_profiles_load_and_select_by_name_number_and_default():
    ps = load_profiles(DEFAULT_PROFILES_DIR, "front-desk")
    assert ps.select("front-desk").name == "front-desk"
    assert ps.select("", "+15550100").name == "front-desk"
    assert ps.select("no-such-profile", "").name == "front-desk"
    assert ps.select().resolve_target("billing") == "2001"


def test_a_bad_profile_names_the_file_and_field(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ninstructions: x\ntools: [launch_missiles]\n")
    with pytest.raises(ProfileError, match=r"a\.yaml: tools"):
        load_profiles(tmp_path, "a")


def test_fallback_transfer_without_target_is_refused(tmp_path):
    (tmp_path / "b.yaml").write_text("name: b\ninstructions: x\nfallback: {action: transfer}\n")
    with pytest.raises(ProfileError, match="b.yaml"):
        load_profiles(tmp_path, "b")


def test_tokens_are_comma_separated_and_local_engine_is_the_default(monkeypatch):
    monkeypatch.setenv("GATEWAY_AUTH_TOKENS", "old-token, new-token")
    s = Settings()
    assert s.auth_tokens == ["old-token", "new-token"]
    assert s.model_url == "ws://127.0.0.1:8092/v1"


def test_an_invalid_setting_stops_start_up_naming_it():
    out = subprocess.run([sys.executable, "-m", "gateway", "serve"], capture_output=True, text=True,
                         timeout=60, env={"GATEWAY_PLAYOUT_LEAD_MS": "5", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "GATEWAY_PLAYOUT_LEAD_MS" in out.stderr
