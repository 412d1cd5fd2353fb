"""An outbound call's and an on-call incident's outcomes survive a restart of `gateway serve` when a record
store is configured: a real gateway (in-process) places the call / pages the ladder through the admin API,
they end, and a second gateway on the same store answers GET /calls/{id} and GET /incidents/{id} from the
store, to their tenant only, with the numbers masked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.fallback import FallbackPrompts
from gateway.profiles import load_profiles
from gateway.serve import Gateway
from gateway.settings import DEFAULT_PROFILES_DIR, Settings

HOST = "127.0.8.51"  # this helper's range; ephemeral ports
TENANTS = """
tenants:
  acme:
    profiles: [front-desk, after-hours]
    numbers: ["+15550002000"]
    admin_tokens: "acme-ops:control:acme-control-secret-0001"
  globex:
    profiles: [briefing]
    numbers: ["+15550003000"]
    admin_tokens: "globex-ops:control:globex-control-secret-01"
"""
ACME = {"Authorization": "Bearer acme-control-secret-0001"}
GLOBEX = {"Authorization": "Bearer globex-control-secret-01"}


AFTER_HOURS = {
    "name": "after-hours", "instructions": "You answer the after-hours line.", "greeting": "After hours.",
    "numbers": ["+15550009000"], "tools": ["escalate"],
    "schedule": {"timezone": "Europe/London", "hours": {}},  # never open
    "on_call": {"people": [{"name": "Primary", "number": "+15550401"},
                           {"name": "Secondary", "number": "+15550402"}],
                "leg_timeout_s": 5, "announce_profile": "front-desk", "bridge_on_ack": False},
}


async def start(tmp_path: Path) -> Gateway:
    profiles = tmp_path / "profiles"
    if not profiles.exists():
        profiles.mkdir()
        for src in DEFAULT_PROFILES_DIR.glob("*.yaml"):
            (profiles / src.name).write_text(src.read_text())
        (profiles / "after-hours.yaml").write_text(yaml.safe_dump(AFTER_HOURS))
    gw = Gateway(Settings(profiles_dir=profiles, _env_file=None,
                          media_host=HOST, media_port=0, admin_host=HOST, admin_port=0,
                          auth_tokens="outcomes-token", records_url=f"sqlite:///{tmp_path}/records.db",
                          tenants_file=tmp_path / "tenants.yaml",
                          admin_tokens="ops:control:operator-secret-000001",
                          outbound_caller_ids="+15550001000", outbound_cps=20, outbound_max_attempts=1,
                          shutdown_timeout_s=2.0, model_connect_timeout_s=2.0),
                 fallback=FallbackPrompts(load_profiles(profiles, "front-desk")))
    await gw.start()
    return gw


async def get(gw: Gateway, path: str, who: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{HOST}:{gw.admin_port}{path}",
                                                          headers=who) as r:
        return r.status, await r.json()


async def post(gw: Gateway, path: str, who: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(f"http://{HOST}:{gw.admin_port}{path}",
                                                           headers=who, json=body) as r:
        assert r.status == 202, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def test_outbound_and_incident_outcomes_are_kept_over_a_restart_for_their_tenant_only(tmp_path):
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gw = await start(tmp_path)
    try:
        call_id = (await post(gw, "/calls", ACME, {"to": "+14155550177"}))["id"]
        incident_id = (await post(gw, "/incidents", ACME, {"profile": "after-hours", "summary": "Pipe burst",
                                                           "callback": "+15550123"}))["id"]
        # No worker is configured: the call fails, with its reason, and that is its outcome.
        for _ in range(200):
            status, before = await get(gw, f"/calls/{call_id}", ACME)
            if before.get("ended_at"):
                break
            await asyncio.sleep(0.05)
        assert before["state"] == "failed" and before["to"] == "+14155550177"
        # Both legs fail the same way: the ladder is exhausted.
        for _ in range(300):
            status, paged = await get(gw, f"/incidents/{incident_id}", ACME)
            if paged.get("ended_at"):
                break
            await asyncio.sleep(0.05)
        assert paged["state"] == "exhausted" and len(paged["steps"]) == 2
        await gw.records.writer.flush()
    finally:
        await gw.shutdown(drain_timeout=0.5)

    again = await start(tmp_path)  # a new process on the same store: nothing in memory
    try:
        assert again.outbound.get(call_id) is None
        status, after = await get(again, f"/calls/{call_id}", ACME)
        assert status == 200 and after["restored"] is True
        assert {k: after[k] for k in ("id", "tenant", "state", "reason", "attempt", "ended_at")} == \
            {k: before[k] for k in ("id", "tenant", "state", "reason", "attempt", "ended_at")}
        assert [e["type"] for e in after["events"]] == [e["type"] for e in before["events"]]
        assert after["to"] == "[PHONE ***0177]"  # the store holds the number masked, as every record
        # Another tenant's call stays a 404, exactly as an id that never existed.
        assert (await get(again, f"/calls/{call_id}", GLOBEX))[0] == 404
        assert (await get(again, "/calls/00000000-0000-0000-0000-000000000000", ACME))[0] == 404
        assert (await get(again, f"/calls/{incident_id}", ACME))[0] == 404  # an incident is not a call
        status, kept = await get(again, f"/incidents/{incident_id}", ACME)
        assert status == 200 and kept["restored"] is True
        assert (kept["state"], kept["ended_at"], [s["result"] for s in kept["steps"]]) == \
            (paged["state"], paged["ended_at"], [s["result"] for s in paged["steps"]])
        assert kept["callback"] == "[PHONE ***0123]"
        assert [s["number"] for s in kept["steps"]] == ["[PHONE ***0401]", "[PHONE ***0402]"]
        assert (await get(again, f"/incidents/{incident_id}", GLOBEX))[0] == 404
    finally:
        await again.shutdown(drain_timeout=0.5)
