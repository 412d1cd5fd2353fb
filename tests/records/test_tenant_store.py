"""Records partitioned per tenant, in the store itself: both back ends (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

from gateway.records import schema
from gateway.records.store import PostgresStore, RecordFilter, SQLiteStore, Store


def _start(call_id: str, tenant: str, caller_key: str = "k_same",
           started: float = 1000.0) -> tuple[str, dict]:
    return ("call_start", {"call_id": call_id, "started_at": started, "profile": f"{tenant}-desk",
                           "tenant": tenant, "caller": "[PHONE ***0111]", "caller_key": caller_key})


def _turn(call_id: str, tenant: str, text: str) -> tuple[str, dict]:
    return ("turn", {"call_id": call_id, "seq": 1, "role": "caller", "item_id": "", "text": text,
                     "start_ms": 0.0, "end_ms": 10.0, "barged_in": False, "heard_ms": None,
                     "latency_ms": None, "tenant": tenant})


def _memory(tenant: str, summary: str, caller_key: str = "k_same") -> tuple[str, dict]:
    return ("memory", {"tenant": tenant, "caller_key": caller_key, "profile": f"{tenant}-desk",
                       "summary": summary, "turns": [{"role": "caller", "text": summary}], "updated_at": 5.0})


def _rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    def q(cur: Any) -> list[tuple[Any, ...]]:
        cur.execute(sql)
        return [tuple(r) for r in cur.fetchall()]

    return list(store._run(q))


def test_the_same_caller_has_one_memory_per_tenant(store):
    store.apply([_memory("acme", "acme: wants a refund"), _memory("globex", "globex: new order")])
    store.apply([_memory("acme", "acme: refund done")])
    acme, globex = store.get_memory("k_same", "acme"), store.get_memory("k_same", "globex")
    assert acme["summary"] == "acme: refund done" and acme["calls"] == 2
    assert globex["summary"] == "globex: new order" and globex["calls"] == 1
    assert store.get_memory("k_same") is None  # the default tenant never called this caller


def test_every_row_carries_its_tenant_and_a_tenant_reads_only_its_own(store):
    store.apply([_start("a1", "acme"), _turn("a1", "acme", "acme words"),
                 ("event", {"call_id": "a1", "seq": 2, "at_ms": 1.0, "kind": "tool", "data": {},
                            "tenant": "acme"}),
                 _start("g1", "globex"), _turn("g1", "globex", "globex words")])
    assert store.get_record("a1", "acme")["turns"][0]["text"] == "acme words"
    assert store.get_record("a1", "globex") is None  # another tenant's id: as if it did not exist
    assert store.get_record("a1")["tenant"] == "acme"  # the operator reads everything
    assert {r["call_id"] for r in store.list_records(RecordFilter(tenant="globex"))} == {"g1"}
    assert sorted(_rows(store, "SELECT call_id, tenant FROM turns")) == [("a1", "acme"), ("g1", "globex")]
    assert _rows(store, "SELECT call_id, tenant FROM events") == [("a1", "acme")]


def test_a_tenants_erasure_leaves_the_same_caller_at_other_tenants(store):
    store.apply([_start("a1", "acme"), _turn("a1", "acme", "x"), _memory("acme", "a"),
                 _start("g1", "globex"), _turn("g1", "globex", "y"), _memory("globex", "g")])
    counts = store.forget("k_same", actor="admin-api:acme-ops", now=7.0, tenant="acme")
    assert counts == {"calls": 1, "turns": 1, "events": 0, "memory": 1}
    assert store.get_record("a1") is None and store.get_memory("k_same", "acme") is None
    assert store.get_record("g1") is not None and store.get_memory("k_same", "globex") is not None
    assert [e["subject"] for e in store.audit_log(tenant="acme")] == ["k_same"]
    assert store.audit_log(tenant="globex") == []
    # The operator's erasure takes the caller from every tenant.
    assert store.forget("k_same", actor="admin-api:dpo")["calls"] == 1
    assert store.get_record("g1") is None and store.get_memory("k_same", "globex") is None
    assert [e["tenant"] for e in store.audit_log()] == [None, "acme"]



def test_a_version_1_store_is_migrated_with_its_rows_given_to_the_default_tenant(store_url):
    """A store written before tenants existed: its calls, turns, events and memory become the `default`
    tenant's, and caller memory is still found."""
    s: Store = PostgresStore(store_url) if store_url.startswith("postgres") else SQLiteStore(
        store_url.removeprefix("sqlite://"))

    def v1(cur: Any) -> None:
        cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for stmt in schema.statements(s.dialect, 1):
            cur.execute(stmt)
        cur.execute("INSERT INTO schema_version (version) VALUES (1)")
        cur.execute("INSERT INTO calls (call_id, started_at, tenant, caller_key) "
                    "VALUES ('old1', 1.0, '', 'k_old')")
        cur.execute("INSERT INTO calls (call_id, started_at, tenant, caller_key) "
                    "VALUES ('old2', 2.0, 'acme', 'k_old')")
        cur.execute("INSERT INTO turns (call_id, seq, role, text) VALUES ('old1', 1, 'caller', 'hello')")
        cur.execute("INSERT INTO turns (call_id, seq, role, text) VALUES ('old2', 1, 'caller', 'hi acme')")
        cur.execute("INSERT INTO events (call_id, seq, at_ms, kind, data) "
                    "VALUES ('old1', 2, 5, 'tool', '{}')")
        cur.execute("INSERT INTO memory (caller_key, profile, summary, turns, calls, updated_at) "
                    f"VALUES ('k_old', 'front-desk', 'remembered', '{json.dumps([])}', 3, 9.0)")

    try:
        s._run(v1)
        assert s.migrate() == schema.LATEST >= 2
        assert s.get_record("old1")["tenant"] == "default" and s.get_record("old2")["tenant"] == "acme"
        turns = sorted(_rows(s, "SELECT call_id, tenant FROM turns"))
        assert turns == [("old1", "default"), ("old2", "acme")]
        assert _rows(s, "SELECT tenant FROM events") == [("default",)]
        mem = s.get_memory("k_old")
        assert mem["summary"] == "remembered" and mem["calls"] == 3
        # The new key holds: the same caller at another tenant is a second row, not a conflict.
        s.apply([_memory("acme", "acme's own", caller_key="k_old")])
        assert s.get_memory("k_old")["summary"] == "remembered"
        assert s.get_memory("k_old", "acme")["summary"] == "acme's own"
        assert s.migrate() == schema.LATEST  # idempotent
    finally:
        s.close()


def test_an_outcome_is_upserted_and_read_back_by_its_tenant_only(store):
    def outcome(state: str, ended: float | None) -> tuple[str, dict]:
        return ("outcome", {"id": "o1", "kind": "outbound", "tenant": "acme", "state": state,
                            "ended_at": ended, "doc": {"id": "o1", "state": state}})

    store.apply([outcome("ringing", None)])
    store.apply([outcome("busy", 12.5)])  # the same call again: one row, the newer state
    assert store.get_outcome("o1", "acme") == {"id": "o1", "state": "busy"}
    assert store.get_outcome("o1") == {"id": "o1", "state": "busy"}  # the operator
    assert store.get_outcome("o1", "globex") is None
    assert _rows(store, "SELECT state, ended_at FROM outcomes") == [("busy", 12.5)]
