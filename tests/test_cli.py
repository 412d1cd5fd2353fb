"""The `gateway` console script: sub-command dispatch as an operator types it."""

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for name in ("serve", "model", "call"):
        assert name in out.stdout


def test_unknown_subcommand_is_refused_with_usage():
    out = run("frobnicate")
    assert out.returncode == 2
    assert "unknown command 'frobnicate'" in out.stderr


def test_no_subcommand_exits_non_zero():
    assert run().returncode == 2
