"""Tenant tokens at the admin API, in process (no sockets): tenant tokens see only their tenant's metrics
and outbound calls."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.admin import make_admin_app
from gateway.auth import TokenAuthority
from gateway.call.registry import CallRegistry
from gateway.outbound.service import OutboundService
from gateway.profiles import load_profiles
from gateway.settings import DEFAULT_PROFILES_DIR, Settings
from gateway.tenants import TenantSet

TENANTS = """
tenants:
  acme:
    profiles: [front-desk]
    numbers: ["+15550002000"]
    admin_tokens: "acme-ops:control:acme-control-secret-0001"
"""


def test_tenant_tokens_see_only_their_metrics_and_their_calls(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text(TENANTS)
    s = Settings(_env_file=None, tenants_file=f, outbound_caller_ids="+15550001000",
                 admin_tokens="ops:control:operator-secret-000001")
    tenants = TenantSet.load(s)
    registry = CallRegistry(10)
    registry.accepting = True
    outbound = OutboundService(s, tenants, load_profiles(DEFAULT_PROFILES_DIR, "front-desk"),
                               control_plane=lambda: None, registry=registry)
    app = make_admin_app(registry, authority=TokenAuthority([*s.admin_tokens, *tenants.admin_tokens()]),
                         outbound=outbound, tenants=tenants)
    acme = {"Authorization": "Bearer acme-control-secret-0001"}
    ops = {"Authorization": "Bearer operator-secret-000001"}
    with TestClient(app) as client:
        # /metrics for a tenant's token: only the series labelled with its tenant (none yet here).
        mine = client.get("/metrics", headers=acme)
        assert mine.status_code == 200 and "gateway_active_calls" not in mine.text
        # Records are partitioned per tenant (tests/records/test_tenant_records.py): no longer refused to
        # a tenant token; this app has no record store, so the routes do not exist.
        assert client.get("/records", headers=acme).status_code == 404
        assert client.get("/metrics", headers=ops).status_code == 200
        mine = client.post("/calls", headers=acme, json={"to": "+15550100"})
        theirs = client.post("/calls", headers=ops, json={"to": "+15550101"})
        assert mine.status_code == theirs.status_code == 202
        assert mine.json()["tenant"] == "acme" and theirs.json()["tenant"] == "default"
        listed = {c["id"] for c in client.get("/outbound/calls", headers=acme).json()}
        assert listed == {mine.json()["id"]}
        assert client.get(f"/calls/{theirs.json()['id']}", headers=acme).status_code == 404
        assert client.get(f"/calls/{mine.json()['id']}", headers=ops).status_code == 200
        assert client.post(f"/calls/{theirs.json()['id']}/hangup", headers=acme).status_code == 404
