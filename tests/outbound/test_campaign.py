"""`gateway dial --csv`: a campaign through the real path; the results file says what happened to each
row (busy callees retried with back-off, a do-not-call number never dialled)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from callees import invites, refusing, swap_callee
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]


def test_csv_campaign_writes_one_result_per_row_with_retries_and_dnc(outpath, tmp_path):
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("+15550300\n")
    path = outpath(gateway_env={"GATEWAY_OUTBOUND_DNC_FILE": str(dnc), "GATEWAY_OUTBOUND_CPS": "10",
                                "GATEWAY_OUTBOUND_RETRY_BACKOFF_S": "0.5"})
    callee = swap_callee(path, refusing(486, "Busy Here"), calls=4)
    campaign = tmp_path / "campaign.csv"
    campaign.write_text("to,max_attempts,customer\n+15550301,2,Ada\n+15550300,1,Bob\n+15550302,1,Cy\n")
    results = tmp_path / "out.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "dial", "--csv", str(campaign), "--results", str(results),
         "--url", path.gateway.admin_url, "--token", ADMIN.split(":", 2)[2], "--poll", "0.2",
         "--timeout", "60"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3/3" in proc.stdout, proc.stdout  # the progress line reached the end
    rows = list(csv.DictReader(results.open()))
    by_to = {r["to"]: r for r in rows}
    assert [r["row"] for r in rows] == ["1", "2", "3"]
    assert by_to["+15550301"]["state"] == "busy" and by_to["+15550301"]["attempts"] == "2", rows
    assert by_to["+15550301"]["sip_status"] == "486"
    assert by_to["+15550300"]["state"] == "refused" and "do-not-call" in by_to["+15550300"]["reason"], rows
    assert by_to["+15550302"]["state"] == "busy" and by_to["+15550302"]["attempts"] == "1", rows
    dialled = [user for _, user in invites(callee)]
    assert sorted(dialled) == ["+15550301", "+15550301", "+15550302"], dialled
