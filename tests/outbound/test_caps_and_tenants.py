"""Caps, the trunk CPS limit and tenant isolation, measured at the carrier (a SIPp callee that rings
until cancelled) on the real FreeSWITCH behind the Kamailio edge."""

from __future__ import annotations

import time

import httpx
import pytest
from callees import invites, ringing_forever, swap_callee
from outbound_tokens import ADMIN

pytestmark = [pytest.mark.freeswitch, pytest.mark.slow]

OPS = {"Authorization": f"Bearer {ADMIN.split(':', 2)[2]}"}
ACME = {"Authorization": "Bearer acme-control-secret-0001"}
GLOBEX = {"Authorization": "Bearer globex-control-secret-01"}

TENANTS = """
tenants:
  acme:
    profiles: [front-desk]
    numbers: ["+15550002000"]
    admin_tokens: "acme-ops:control:acme-control-secret-0001"
    max_outbound: 5
    queue_max_wait_s: 120
  globex:
    profiles: [front-desk]
    numbers: ["+15550003000"]
    admin_tokens: "globex-ops:control:globex-control-secret-01"
    max_outbound: 5
"""


def api(path, method: str, url: str, headers: dict, **kw) -> httpx.Response:
    return httpx.request(method, f"{path.gateway.admin_url}{url}", headers=headers, timeout=10, **kw)


def wait_invites(callee, n: int, timeout: float) -> list[tuple[float, str]]:
    deadline = time.monotonic() + timeout
    got = invites(callee)
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        got = invites(callee)
    return got


def test_the_sixth_call_of_a_five_cap_tenant_waits_and_another_tenant_is_not_blocked(outpath, tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    path = outpath(gateway_env={"GATEWAY_TENANTS_FILE": str(tenants), "GATEWAY_OUTBOUND_CPS": "20"})
    callee = swap_callee(path, ringing_forever(), calls=8)
    ids = []
    for i in range(6):
        r = api(path, "POST", "/calls", ACME, json={"to": f"+1555010{i}", "ring_timeout_s": 60})
        assert r.status_code == 202, r.text
        assert r.json()["tenant"] == "acme" and r.json()["caller_id"] == "+15550002000"
        ids.append(r.json()["id"])
    got = wait_invites(callee, 5, 15)
    assert len(got) == 5, got
    time.sleep(2.0)
    assert len(invites(callee)) == 5, "the sixth call of a 5-cap tenant was dialled"
    sixth = api(path, "GET", f"/calls/{ids[5]}", ACME).json()
    assert sixth["state"] == "queued", sixth
    assert any(e["type"] == "call.waiting" for e in sixth["events"]), sixth["events"]

    # Another tenant's call goes out at once, while acme's sixth still waits.
    r = api(path, "POST", "/calls", GLOBEX, json={"to": "+15550199", "ring_timeout_s": 60})
    assert r.status_code == 202, r.text
    globex_id = r.json()["id"]
    got = wait_invites(callee, 6, 10)
    assert len(got) == 6 and got[5][1] == "+15550199", got

    # Tenant isolation: globex neither sees nor ends acme's calls, and acme not globex's.
    assert api(path, "GET", f"/calls/{ids[0]}", GLOBEX).status_code == 404
    assert api(path, "POST", f"/calls/{ids[0]}/hangup", GLOBEX).status_code == 404
    assert api(path, "GET", f"/calls/{globex_id}", ACME).status_code == 404
    listed = {c["id"] for c in api(path, "GET", "/outbound/calls", GLOBEX).json()}
    assert listed == {globex_id}, listed
    assert api(path, "GET", f"/calls/{ids[0]}", ACME).json()["state"] == "ringing"
    # A tenant token cannot present another tenant's number, nor act for another tenant.
    r = api(path, "POST", "/calls", GLOBEX, json={"to": "+15550198", "caller_id": "+15550002000"})
    assert r.status_code == 403, r.text
    r = api(path, "POST", "/calls", GLOBEX, json={"to": "+15550198", "tenant": "acme"})
    assert r.status_code == 403, r.text

    # acme ends one of its ringing calls: the queued sixth is dialled now.
    assert api(path, "POST", f"/calls/{ids[0]}/hangup", ACME).status_code == 200
    got = wait_invites(callee, 7, 15)
    assert len(got) == 7 and got[6][1] == "+15550105", got
    first = api(path, "GET", f"/calls/{ids[0]}", OPS).json()
    assert first["state"] == "canceled", first

    for cid in [*ids[1:], globex_id]:
        api(path, "POST", f"/calls/{cid}/hangup", OPS)
    assert path.fs.wait_channels(0, timeout=10) == 0


def test_the_trunk_cps_limit_spaces_invites_at_the_carrier(outpath):
    path = outpath(gateway_env={"GATEWAY_OUTBOUND_CPS": "2", "GATEWAY_OUTBOUND_MAX_CONCURRENT": "10"})
    callee = swap_callee(path, ringing_forever(), calls=5)
    ids = []
    for i in range(5):
        r = api(path, "POST", "/calls", OPS, json={"to": f"+1555020{i}", "ring_timeout_s": 60})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    got = wait_invites(callee, 5, 20)
    assert len(got) == 5, got
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:], strict=False)]
    print(f"\nINVITE spacing at the carrier with 2 CPS: {', '.join(f'{g:.3f}' for g in gaps)} s")
    # 2 calls per second = 0.5 s apart; the edge and SIPp can only add delay, so a shorter gap is a
    # broken limit (a small allowance for jitter between two hops on a loaded machine).
    assert min(gaps) >= 0.45, gaps
    for cid in ids:
        api(path, "POST", f"/calls/{cid}/hangup", OPS)
    assert path.fs.wait_channels(0, timeout=10) == 0


def test_a_tenant_lists_and_ends_only_its_own_live_calls(outpath, tmp_path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS)
    path = outpath(gateway_env={"GATEWAY_TENANTS_FILE": str(tenants), "GATEWAY_OUTBOUND_CPS": "20"})
    swap_callee(path, calls=2)
    acme = api(path, "POST", "/calls", ACME, json={"to": "+15550700"}).json()["id"]
    globex = api(path, "POST", "/calls", GLOBEX, json={"to": "+15550701"}).json()["id"]
    deadline = time.monotonic() + 20
    live: list = []
    while len(live) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        live = api(path, "GET", "/calls", OPS).json()
    assert {c["uuid"] for c in live} == {acme, globex}, live
    assert {c["tenant"] for c in live} == {"acme", "globex"}
    assert [c["uuid"] for c in api(path, "GET", "/calls", ACME).json()] == [acme]
    assert [c["uuid"] for c in api(path, "GET", "/calls", GLOBEX).json()] == [globex]
    # Another tenant's live call does not exist for globex: not readable, not ended, not transferred.
    assert api(path, "GET", f"/calls/{acme}", GLOBEX).status_code == 404
    assert api(path, "POST", f"/calls/{acme}/hangup", GLOBEX).status_code == 404
    assert api(path, "POST", f"/calls/{acme}/transfer", GLOBEX, json={"target": "2001"}).status_code == 404
    time.sleep(1.0)
    assert api(path, "GET", f"/calls/{acme}", ACME).json()["state"] == "answered"
    # Its own: ended.
    assert api(path, "POST", f"/calls/{globex}/hangup", GLOBEX).status_code == 200
    assert api(path, "POST", f"/calls/{acme}/hangup", ACME).status_code == 200
    assert path.fs.wait_channels(0, timeout=10) == 0
