"""`gateway dial` refuses what it cannot do, clearly, before or instead of dialling."""

from __future__ import annotations

import subprocess
import sys


def dial(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "dial", *args], capture_output=True, text=True,
                          timeout=60)


def test_a_number_or_a_csv_is_required_not_both(tmp_path):
    assert dial().returncode == 2
    csv = tmp_path / "c.csv"
    csv.write_text("to\n+15550100\n")
    r = dial("+15550100", "--csv", str(csv))
    assert r.returncode == 2 and "one number or --csv" in r.stderr


def test_variables_must_be_name_value():
    r = dial("+15550100", "--var", "oops")
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr


def test_a_csv_without_a_to_column_is_refused(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("number\n+15550100\n")
    r = dial("--csv", str(csv), "--url", "http://127.0.5.99:9")
    assert r.returncode == 2 and "`to` column" in r.stderr


def test_an_unreachable_admin_api_is_reported():
    r = dial("+15550100", "--url", "http://127.0.5.99:9", "--token", "x")
    assert r.returncode == 1 and "cannot reach the admin API" in r.stderr
