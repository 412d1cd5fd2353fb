"""The .deb the Ansible role installs: what `dpkg-deb --info/--contents` says about it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fsmod_support import FS_PREFIX, PACKAGING, build_patched_deb, default_source, have_freeswitch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_freeswitch(), reason="no FreeSWITCH headers to build with")]
PKG_CONFIG_PATH = {"PKG_CONFIG_PATH": str(FS_PREFIX / "lib" / "pkgconfig")}


def run(*cmd: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def deb() -> Path:
    return build_patched_deb()


def control(deb: Path) -> dict[str, str]:
    text = run("dpkg-deb", "--field", str(deb), check=True).stdout
    return dict(re.findall(r"^([A-Za-z-]+): (.*)$", text, re.M))


def test_deb_is_named_for_the_package_and_pinned_version(deb: Path) -> None:
    version = re.search(r"^VERSION=(.+)$", (PACKAGING / "SOURCE").read_text(), re.M).group(1)  # type: ignore[union-attr]
    assert deb.name == f"freeswitch-mod-audio-stream-aivg_{version}_amd64.deb"
    fields = control(deb)
    assert fields["Package"] == "freeswitch-mod-audio-stream-aivg"
    assert fields["Version"] == version
    assert fields["Architecture"] == "amd64"


def test_deb_replaces_a_vendor_mod_audio_stream_package(deb: Path) -> None:
    fields = control(deb)
    for relation in ("Provides", "Conflicts", "Replaces"):
        assert "freeswitch-mod-audio-stream" in [p.strip() for p in fields[relation].split(",")], relation
    # The runtime libraries libwsc links (libevent, OpenSSL for wss://) come as dependencies.
    depends = fields["Depends"]
    for lib in ("libevent-2.1-7", "libevent-pthreads-2.1-7", "libssl3", "libstdc++6"):
        assert lib in depends


def test_deb_installs_the_module_into_pkg_configs_modulesdir_with_licence_and_patches(deb: Path) -> None:
    listing = run("dpkg-deb", "--contents", str(deb), check=True).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    modulesdir = run("pkg-config", "--variable=modulesdir", "freeswitch", env=PKG_CONFIG_PATH,
                     check=True).stdout.strip()
    assert f"{modulesdir}/mod_audio_stream.so" in paths
    doc = "/usr/share/doc/freeswitch-mod-audio-stream-aivg"
    assert f"{doc}/copyright" in paths  # MIT: the licence travels with the binary
    for patch in (PACKAGING / "patches").glob("*.patch"):
        assert f"{doc}/{patch.name}.gz" in paths


def test_build_is_idempotent(deb: Path) -> None:
    """A second run with the same inputs keeps the .deb as it is (the role runs it on every apply)."""
    before = (deb.stat().st_mtime_ns, deb.read_bytes())
    assert build_patched_deb() == deb
    assert (deb.stat().st_mtime_ns, deb.read_bytes()) == before


def test_build_refuses_a_tarball_with_the_pinned_name_but_other_bytes(tmp_path: Path) -> None:
    name = re.search(r"^TARBALL=(.+)$", (PACKAGING / "SOURCE").read_text(), re.M).group(1)  # type: ignore[union-attr]
    fake = tmp_path / name
    fake.write_bytes(b"not the pinned source")
    result = run(str(PACKAGING / "build-deb.sh"), "--source", str(fake), "--out", str(tmp_path / "out"),
                 "--freeswitch-pkgconfig", str(FS_PREFIX / "lib" / "pkgconfig"), timeout=60)
    assert result.returncode != 0
    assert "sha256" in result.stderr
    assert not list((tmp_path / "out").glob("*.deb"))


def test_build_asks_for_libwsc_when_the_source_lacks_the_submodule(tmp_path: Path) -> None:
    """GitHub's archive of the module has an empty libs/libwsc (a submodule): say what is missing."""
    src = tmp_path / "mod_audio_stream-7d9fe1d"
    src.mkdir()
    subprocess.run(["tar", "-xzf", str(default_source()), "-C", str(src), "--strip-components=1"], check=True)
    shutil.rmtree(src / "libs" / "libwsc")
    (src / "libs" / "libwsc").mkdir()
    result = run(str(PACKAGING / "build-deb.sh"), "--source", str(src), "--out", str(tmp_path / "out"),
                 "--freeswitch-pkgconfig", str(FS_PREFIX / "lib" / "pkgconfig"), timeout=60)
    assert result.returncode != 0
    assert "--libwsc" in result.stderr
