"""Helpers shared by the Ansible tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
# Outside the repository so reruns reuse downloads; everything still works when it is empty or missing.
CACHE_DIR = Path(os.environ.get("AIVG_TEST_CACHE", "/var/cache/aivg-test"))
DEBIAN_MIRROR = os.environ.get("AIVG_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# python3 is what Ansible needs on a managed host; systemd is on every Debian VM (minbase leaves it out).
BASE_INCLUDE = "python3,systemd"


def tool(name: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def ansible_env(tmp: Path) -> dict[str, str]:
    """Environment for ansible-* runs: the repository's ansible.cfg, a private local temp dir, no colour."""
    env = dict(os.environ)
    # The common preflight reads the controller's address from SSH_CLIENT; a test runner's own SSH
    # session must not leak into local and chroot connections.
    env.pop("SSH_CLIENT", None)
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
    )
    return env


def run(cmd: list[str], *, cwd: Path = ANSIBLE_DIR, env: dict[str, str] | None = None,
        timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout,
                          check=False)




def cache_writable() -> bool:
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        probe = CACHE_DIR / ".probe"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def debootstrap(root: Path, log: list[str]) -> None:
    base = ["debootstrap", "--variant=minbase", f"--include={BASE_INCLUDE}"]
    tarball = CACHE_DIR / f"{SUITE}-minbase.tgz"
    if cache_writable() and not tarball.exists():
        partial = tarball.with_suffix(".partial.tgz")
        made = run([*base, f"--make-tarball={partial}", SUITE, str(root.parent / "tarball-work"),
                    DEBIAN_MIRROR], cwd=root.parent)
        log.append(made.stdout[-500:] + made.stderr[-500:])
        if made.returncode == 0:
            partial.rename(tarball)
    if tarball.exists():
        cmd = [*base, f"--unpack-tarball={tarball}", SUITE, str(root), DEBIAN_MIRROR]
    else:
        cmd = [*base, SUITE, str(root), DEBIAN_MIRROR]
    made = run(cmd, cwd=root.parent)
    log.append(made.stdout[-1500:] + made.stderr[-1500:])
    assert made.returncode == 0, "\n".join(log)


def mounts_under(root: Path) -> list[str]:
    prefix = str(root)
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]
