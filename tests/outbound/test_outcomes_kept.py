"""An outbound call's outcome survives a restart of `gateway serve` when a record store is configured:
a real gateway (in-process) places the call through the admin API, ends, and a second gateway on the same
store answers GET /calls/{id} from the store, to the call's tenant only, with the number masked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from gateway.fallback import FallbackPrompts
from gateway.profiles import load_profiles
from gateway.serve import Gateway
from gateway.settings import DEFAULT_PROFILES_DIR, Settings

HOST = "127.0.8.51"  # this helper's range; ephemeral ports
TENANTS = """
tenants:
  acme:
    profiles: [front-desk]
    numbers: ["+15550002000"]
    admin_tokens: "acme-ops:control:acme-control-secret-0001"
  globex:
    profiles: [briefing]
    numbers: ["+15550003000"]
    admin_tokens: "globex-ops:control:globex-control-secret-01"
"""
ACME = {"Authorization": "Bearer acme-control-secret-0001"}
GLOBEX = {"Authorization": "Bearer globex-control-secret-01"}


async def start(tmp_path: Path) -> Gateway:
    gw = Gateway(Settings(_env_file=None, media_host=HOST, media_port=0, admin_host=HOST, admin_port=0,
                          auth_tokens="outcomes-token", records_url=f"sqlite:///{tmp_path}/records.db",
                          tenants_file=tmp_path / "tenants.yaml",
                          admin_tokens="ops:control:operator-secret-000001",
                          outbound_caller_ids="+15550001000", outbound_cps=20, outbound_max_attempts=1,
                          shutdown_timeout_s=2.0, model_connect_timeout_s=2.0),
                 fallback=FallbackPrompts(load_profiles(DEFAULT_PROFILES_DIR, "front-desk")))
    await gw.start()
    return gw


async def get(gw: Gateway, path: str, who: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{HOST}:{gw.admin_port}{path}",
                                                          headers=who) as r:
        return r.status, await r.json()


async def test_an_outbound_calls_outcome_is_kept_over_a_restart_for_its_tenant_only(tmp_path):
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gw = await start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://{HOST}:{gw.admin_port}/calls", headers=ACME, json={"to": "+14155550177"}) as r:
            assert r.status == 202
            call_id = (await r.json())["id"]
        # No worker is configured: the call fails, with its reason, and that is its outcome.
        for _ in range(200):
            status, before = await get(gw, f"/calls/{call_id}", ACME)
            if before.get("ended_at"):
                break
            await asyncio.sleep(0.05)
        assert before["state"] == "failed" and before["to"] == "+14155550177"
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
    finally:
        await again.shutdown(drain_timeout=0.5)
