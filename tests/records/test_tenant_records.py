"""Records partitioned per tenant, end to end: a real `gateway serve` (in-process) with a tenants file, a
Realtime-protocol fake as the model, calls placed as mod_audio_stream places them, and the admin API over
HTTP with each tenant's token and the operator's."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from pathlib import Path
from typing import Any

import aiohttp
from gw_helpers import tone
from harness.profiles import desk_profiles
from rec_helpers import TOKEN

from gateway.client.call import place_call

HOST = "127.0.8.11"  # this helper's loopback range (media + admin, ephemeral ports)
CALLER = "+14155550111"
SAID = "Hi, my name is Maria Lopez, call me back at 415-555-0132 about my appointment"
ACME_NUMBER, GLOBEX_NUMBER = "+15550200", "+15550300"
ACME = {"Authorization": "Bearer acme-control-secret-0001"}
GLOBEX = {"Authorization": "Bearer globex-control-secret-01"}
OPS = {"Authorization": "Bearer operator-secret-000001"}
TENANTS = f"""
tenants:
  acme:
    profiles: [acme-desk]
    numbers: ["{ACME_NUMBER}"]
    admin_tokens: "acme-ops:control:acme-control-secret-0001"
  globex:
    profiles: [globex-desk]
    numbers: ["{GLOBEX_NUMBER}"]
    admin_tokens: "globex-ops:control:globex-control-secret-01"
"""


def tenant_profiles(tmp: Path) -> Path:
    """The shipped profiles plus two copies of front-desk, one per tenant, each with caller memory on and
    its own dialled number."""
    return desk_profiles(tmp, {"acme-desk": ACME_NUMBER, "globex-desk": GLOBEX_NUMBER},
                         records={"memory": {"mode": "on", "turns": 4}})


async def call(gw: Any, callee: str, call_uuid: str) -> Any:
    """A call to `callee` with no profile in the metadata: the dialled number picks the profile, and the
    profile's owner is the tenant."""
    meta = {"caller": CALLER, "callee": callee, "call_id": "CA" + "3" * 32, "worker": "fs1", "profile": "",
            "rate": 8000}
    return await place_call(f"ws://{HOST}:{gw.media_port}/stream/{call_uuid}",
                            tone(0.8, 8000, lead_silence=1.4, tail_silence=0.6), rate=8000, metadata=meta,
                            token=TOKEN, wait_for_greeting=False, reply_timeout=10, quiet_s=0.8)


async def remembered(gw: Any, tenant: str, calls: int) -> dict[str, Any]:
    for _ in range(200):
        mem = await gw.records.get_memory(CALLER, tenant)
        if mem and mem["calls"] >= calls:
            return mem  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no memory of {calls} call(s) at {tenant}")


async def test_each_tenant_sees_only_its_records_and_remembers_the_caller_on_its_own(
    records_gateway, realtime_fake, tmp_path
):
    model = await realtime_fake(greeting_ms=300, reply_ms=300, speed=10.0, caller_transcript=SAID)
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    gw = await records_gateway(
        model_url=model.url, records_url=f"sqlite:///{tmp_path}/r.db", profiles_dir=tenant_profiles(tmp_path),
        tenants_file=tmp_path / "tenants.yaml", admin_tokens="ops:control:operator-secret-000001",
        media_host=HOST, admin_host=HOST)
    acme1, globex1, acme2 = (str(uuidlib.uuid4()) for _ in range(3))

    # The same caller calls acme, then globex, then acme again.
    assert (await call(gw, ACME_NUMBER, acme1)).errors == []
    await remembered(gw, "acme", 1)
    assert (await call(gw, GLOBEX_NUMBER, globex1)).errors == []
    await remembered(gw, "globex", 1)
    assert (await call(gw, ACME_NUMBER, acme2)).errors == []
    await remembered(gw, "acme", 2)
    first, at_globex, second = (
        s.of_type("session.update")[0]["session"]["instructions"] for s in model.sessions)
    assert "earlier call" not in first
    # What acme learnt never reaches globex's agent; acme's agent gets it back.
    assert "earlier call" not in at_globex and "Maria Lopez" not in at_globex
    assert "earlier call" in second and "\nCaller name: Maria Lopez\n" in second
    await gw.records.writer.flush()

    admin = f"http://{HOST}:{gw.admin_port}"
    async with aiohttp.ClientSession() as http:

        async def get(path: str, who: dict[str, str], **params: str) -> tuple[int, Any]:
            async with http.get(admin + path, headers=who, params=params) as r:
                return r.status, await r.json() if r.content_type == "application/json" else await r.text()

        status, page = await get("/records", ACME)
        assert status == 200 and {x["call_id"] for x in page["records"]} == {acme1, acme2}
        assert {x["tenant"] for x in page["records"]} == {"acme"}
        status, page = await get("/records", GLOBEX)
        assert [x["call_id"] for x in page["records"]] == [globex1]
        status, page = await get("/records", OPS)
        assert {x["call_id"] for x in page["records"]} == {acme1, acme2, globex1}
        assert (await get("/records", ACME, tenant="globex"))[1]["records"] == []  # no peeking by filter
        assert (await get("/records", OPS, tenant="globex"))[1]["records"][0]["call_id"] == globex1
        # Another tenant's record id is a 404, word for word the reply for an id that never existed.
        other, unknown = str(uuidlib.uuid4()), await get(f"/records/{globex1}", ACME)
        never = await get(f"/records/{other}", ACME)
        assert unknown == (404, {"detail": f"no record of call {globex1}"})
        assert never == (404, {"detail": f"no record of call {other}"})
        status, rec = await get(f"/records/{acme1}", ACME)
        assert status == 200 and rec["tenant"] == "acme" and rec["turns"]
        assert (await get(f"/records/{globex1}", OPS))[0] == 200
        status, exported = await get("/records/export", GLOBEX, format="csv")
        assert status == 200 and globex1 in exported and acme1 not in exported and acme2 not in exported
        # Memory per tenant: two calls at acme, one at globex.
        status, mem = await get(f"/callers/{CALLER}/memory", ACME)
        assert status == 200 and mem["calls"] == 2
        assert (await get(f"/callers/{CALLER}/memory", GLOBEX))[1]["calls"] == 1
        assert (await get(f"/callers/{CALLER}/memory", GLOBEX, tenant="acme"))[0] == 404
        assert (await get(f"/callers/{CALLER}/memory", OPS, tenant="acme"))[1]["calls"] == 2
        # acme erases the caller: its records and memory go; globex's stay.
        async with http.delete(f"{admin}/callers/{CALLER}", headers=ACME) as r:
            assert r.status == 200
            erased = (await r.json())["erased"]
        assert erased["calls"] == 2 and erased["memory"] == 1 and erased["turns"] >= 4
        assert (await get(f"/callers/{CALLER}/memory", ACME))[0] == 404
        assert (await get(f"/callers/{CALLER}/memory", GLOBEX))[0] == 200
        assert (await get(f"/records/{globex1}", OPS))[0] == 200
        assert (await get("/records", OPS))[1]["records"][0]["call_id"] == globex1
        status, audit = await get("/records-audit", ACME)
        assert [(e["action"], e["actor"], e["tenant"]) for e in audit] == [
            ("erase", "admin-api:acme-ops", "acme")]
        assert (await get("/records-audit", GLOBEX))[1] == []
