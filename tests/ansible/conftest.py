"""Fixtures for the Ansible tests: the playbook's tools, the project's wheel, and a Debian 12 root.

The chroot apply needs root, debootstrap and the Debian mirror and takes minutes; it is marked
`chroot` and runs only when asked for: `pytest -m chroot tests/ansible`, or AIVG_TEST_CHROOT=1 in the
environment (e.g. `AIVG_TEST_CHROOT=1 make test`). Otherwise it is reported as skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aivg_ansible_support import (
    CACHE_DIR,
    REPO,
    ansible_env,
    cache_writable,
    debootstrap,
    mounts_under,
    run,
    tool,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chroot: applies the roles into a debootstrapped Debian 12 root (root, debootstrap, mirror; minutes)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = os.environ.get("AIVG_TEST_CHROOT") == "1" or "chroot" in (config.getoption("-m") or "")
    if asked:
        return
    skip = pytest.mark.skip(reason="takes minutes: pytest -m chroot tests/ansible (or AIVG_TEST_CHROOT=1)")
    for item in items:
        if item.get_closest_marker("chroot"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def collections_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The collections of ansible/requirements.yml must resolve (from the `ansible` PyPI bundle, or
    installed from Galaxy into a temp dir when the bundle is missing)."""
    env = ansible_env(tmp_path_factory.mktemp("galaxy"))
    listed = run([tool("ansible-galaxy"), "collection", "list", "community.general"], env=env)
    if "community.general" in listed.stdout:
        return
    target = tmp_path_factory.mktemp("collections")
    got = run([tool("ansible-galaxy"), "collection", "install", "-r", "requirements.yml", "-p", str(target)],
              env=env, timeout=300)
    assert got.returncode == 0, (
        "community.general is missing: `pip install 'ansible>=12.3,<13'` (offline bundle) or reach Galaxy\n"
        + got.stderr[-2000:]
    )
    os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(target)


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel, the way an operator builds it for the gateway role."""
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy: never write build/ or egg-info into the shared work tree while others test.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "gateway", "dispatcher", "loadtest"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.exists():
            shutil.copy2(path, src / name)
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                cwd=src, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = sorted(out.glob("ai_voice_sip_gateway-*.whl"))
    assert wheels, f"no wheel in {out}"
    return wheels[-1]


@pytest.fixture(scope="session")
def wheelhouse(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dependency wheels at the pinned versions, so the root installs offline (no PyPI per apply)."""
    house = CACHE_DIR / "wheelhouse" if cache_writable() else tmp_path_factory.mktemp("wheelhouse")
    house.mkdir(parents=True, exist_ok=True)
    got = run([sys.executable, "-m", "pip", "download", "-q", "-d", str(house),
               "-c", str(REPO / "requirements" / "lock.txt"), str(project_wheel)], cwd=REPO, timeout=900)
    assert got.returncode == 0, got.stderr[-3000:]
    # The project itself is installed from its own wheel, never from an older copy in the house.
    for stale in house.glob("ai_voice_sip_gateway-*.whl"):
        stale.unlink()
    return house


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clean Debian 12 root made with debootstrap (minbase + python3 + systemd), as root only."""
    if os.geteuid() != 0:
        pytest.skip("the chroot apply needs root")
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed (requirements/apt.txt)")
    base = tmp_path_factory.mktemp("chroot")
    root = base / "root"
    log: list[str] = []
    started = time.monotonic()
    debootstrap(root, log)
    # Reported for docs/ansible.md; nothing asserts on it.
    print(f"debootstrap: {time.monotonic() - started:.0f}s")
    # Name resolution for apt inside the root, and no daemon started by a package's maintainer script
    # (the roles' own service starts are switched off by their *_service_start variables).
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# test root: never start services\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield root
    finally:
        # debootstrap unmounts what it mounts; anything still mounted (an interrupted run) goes now,
        # deepest first, before the tree is removed.
        for point in sorted(mounts_under(root), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        if not mounts_under(root):
            shutil.rmtree(base, ignore_errors=True)

