"""The record store, run against both back ends: SQLite (WAL) and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.records import schema
from gateway.records.store import RecordFilter, SQLiteStore, open_store
from gateway.records.writer import RecordWriter


def _call(call_id: str, started: float, **kw: object) -> tuple[str, dict]:
    d = {
        "call_id": call_id,
        "started_at": started,
        "ingress": "freeswitch",
        "profile": "front-desk",
        "tenant": "",
        "caller": "[PHONE ***4567]",
        "caller_key": "k_a",
        "callee": "",
        "sip_call_id": "CA1",
        "worker": "fs1",
    }
    d.update(kw)
    return ("call_start", d)


def _turn(call_id: str, seq: int, role: str, text: str, item: str = "") -> tuple[str, dict]:
    return (
        "turn",
        {
            "call_id": call_id,
            "seq": seq,
            "role": role,
            "item_id": item,
            "text": text,
            "start_ms": 100.0 * seq,
            "end_ms": 100.0 * seq + 50,
            "barged_in": False,
            "heard_ms": None,
            "latency_ms": 420.0 if role == "agent" else None,
        },
    )


def test_migrations_bring_an_empty_store_to_the_latest_version_and_are_idempotent(store):
    assert store.schema_version() == schema.LATEST
    assert store.migrate() == schema.LATEST  # a second gateway starting against the same database


def test_a_call_is_written_as_it_happens_and_read_back_with_turns_and_events(store):
    store.apply([_call("c1", 1000.0), _turn("c1", 1, "agent", "Hello, front desk.", "item_a")])
    rec = store.get_record("c1")
    assert rec["outcome"] is None and [t["text"] for t in rec["turns"]] == ["Hello, front desk."]
    store.apply(
        [
            _turn("c1", 2, "caller", "what are your opening hours"),
            ("barge_in", {"call_id": "c1", "item_id": "item_a", "heard_ms": 730.0}),
            (
                "event",
                {
                    "call_id": "c1",
                    "seq": 3,
                    "at_ms": 900.0,
                    "kind": "tool",
                    "data": {"name": "transfer_call", "ok": True},
                },
            ),
            ("call_end", {"call_id": "c1", "ended_at": 1012.5, "outcome": "transferred", "duration_s": 12.5}),
            ("analysis", {"call_id": "c1", "analysis": {"intent": "hours"}}),
        ]
    )
    rec = store.get_record("c1")
    assert rec["outcome"] == "transferred" and rec["duration_s"] == 12.5
    assert rec["turns"][0]["barged_in"] is True and rec["turns"][0]["heard_ms"] == 730.0
    assert [t["role"] for t in rec["turns"]] == ["agent", "caller"]
    assert rec["events"] == [
        {"seq": 3, "at_ms": 900.0, "kind": "tool", "data": {"name": "transfer_call", "ok": True}}
    ]
    assert rec["analysis"] == {"intent": "hours"}
    assert store.get_record("nope") is None


def test_a_repeated_call_start_does_not_duplicate_or_fail(store):
    store.apply([_call("c1", 1.0)])
    store.apply([_call("c1", 2.0)])
    assert len(store.list_records(RecordFilter())) == 1


def test_listing_filters_and_pages(store):
    ops = []
    for i in range(7):
        ops.append(
            _call(f"c{i}", 1000.0 + i, caller_key="k_a" if i % 2 else "k_b", tenant="t1" if i < 3 else "t2")
        )
        ops.append(
            (
                "call_end",
                {
                    "call_id": f"c{i}",
                    "ended_at": 1001.0 + i,
                    "outcome": "completed" if i % 3 else "transferred",
                    "duration_s": 1.0,
                },
            )
        )
    store.apply(ops)
    newest_first = [r["call_id"] for r in store.list_records(RecordFilter(limit=3))]
    assert newest_first == ["c6", "c5", "c4"]
    assert [r["call_id"] for r in store.list_records(RecordFilter(limit=3, offset=3))] == ["c3", "c2", "c1"]
    assert {r["call_id"] for r in store.list_records(RecordFilter(caller="k_a"))} == {"c1", "c3", "c5"}
    assert {r["call_id"] for r in store.list_records(RecordFilter(outcome="transferred"))} == {
        "c0",
        "c3",
        "c6",
    }
    assert {r["call_id"] for r in store.list_records(RecordFilter(tenant="t1"))} == {"c0", "c1", "c2"}
    assert {r["call_id"] for r in store.list_records(RecordFilter(since=1002.0, until=1004.0))} == {
        "c2",
        "c3",
    }


def test_erasure_removes_every_record_and_the_memory_of_one_caller_and_is_audited(store):
    store.apply(
        [
            _call("a1", 1.0, caller_key="k_a"),
            _turn("a1", 1, "caller", "my name is Maria"),
            ("event", {"call_id": "a1", "seq": 2, "at_ms": 1.0, "kind": "tool", "data": {}}),
            _call("b1", 2.0, caller_key="k_b"),
            _turn("b1", 1, "caller", "hello"),
            (
                "memory",
                {
                    "caller_key": "k_a",
                    "profile": "front-desk",
                    "summary": "Maria",
                    "turns": [],
                    "updated_at": 5.0,
                },
            ),
        ]
    )
    counts = store.forget("k_a", actor="admin-api:test", now=10.0)
    assert counts == {"calls": 1, "turns": 1, "events": 1, "memory": 1}
    assert store.get_record("a1") is None and store.get_memory("k_a") is None
    assert store.get_record("b1") is not None  # another caller is untouched
    (entry,) = store.audit_log()
    assert entry["action"] == "erase" and entry["subject"] == "k_a" and entry["actor"] == "admin-api:test"
    assert "Maria" not in str(entry)  # the audit keeps counts, never the erased words


def test_retention_deletes_only_old_records_of_the_profile(store):
    day = 86400.0
    store.apply(
        [
            _call("old", 100 * day),
            _call("new", 200 * day),
            _call("other", 100 * day, profile="coach"),
            (
                "memory",
                {
                    "caller_key": "k_old",
                    "profile": "front-desk",
                    "summary": "",
                    "turns": [],
                    "updated_at": 100 * day,
                },
            ),
        ]
    )
    counts = store.retention("front-desk", older_than=150 * day, now=200 * day)
    assert counts == {"calls": 1, "turns": 0, "events": 0, "memory": 1}
    assert {r["call_id"] for r in store.list_records(RecordFilter())} == {"new", "other"}
    assert store.audit_log()[0]["action"] == "retention"


def test_memory_upsert_counts_calls(store):
    for i in range(2):
        store.apply(
            [
                (
                    "memory",
                    {
                        "caller_key": "k",
                        "profile": "p",
                        "summary": f"s{i}",
                        "turns": [{"role": "caller", "text": f"t{i}"}],
                        "updated_at": float(i),
                    },
                )
            ]
        )
    mem = store.get_memory("k")
    assert mem["calls"] == 2 and mem["summary"] == "s1" and mem["turns"] == [{"role": "caller", "text": "t1"}]


def test_sqlite_store_runs_in_wal_mode(tmp_path: Path):
    s = open_store(f"sqlite:///{tmp_path}/r.db")
    s.migrate()
    s.close()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_writer_buffers_while_the_store_is_down_then_writes_everything(tmp_path: Path):
    """A store that cannot be opened (its directory is missing) is a store that is down."""
    db_dir = tmp_path / "later"
    db_dir.mkdir()
    store = SQLiteStore(str(db_dir / "records.db"))
    writer = RecordWriter(store, retry_initial_s=0.05, retry_max_s=0.1)
    await writer.start()
    store.close()
    db_dir.rename(tmp_path / "moved")  # the store goes away
    for i in range(20):
        assert writer.submit(*_call(f"c{i}", float(i)))  # never waits
    await asyncio.sleep(0.3)
    assert not writer.store_ok and writer.buffered == 20 and writer.written == 0
    (tmp_path / "moved").rename(db_dir)  # and comes back
    assert await writer.flush(10)
    assert writer.store_ok and writer.written == 20 and writer.dropped == 0
    await writer.close()
    assert len(SQLiteStore(str(db_dir / "records.db")).list_records(RecordFilter(limit=100))) == 20


async def test_writer_drops_and_counts_once_its_buffer_is_full(tmp_path: Path):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    store = SQLiteStore(str(db_dir / "records.db"))
    writer = RecordWriter(store, max_buffered=5, retry_initial_s=0.05, retry_max_s=0.1)
    await writer.start()
    store.close()
    db_dir.rename(tmp_path / "gone")
    accepted = [writer.submit(*_call(f"c{i}", float(i))) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3
    assert writer.dropped == 3
    (tmp_path / "gone").rename(db_dir)
    assert await writer.flush(10)
    assert writer.written == 5
    await writer.close()


async def test_writer_against_postgres_survives_a_server_restart(pg_dsn):
    """The real server goes away under the writer (connections killed) and the writer reconnects."""
    import psycopg

    from gateway.records.store import PostgresStore

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    store = PostgresStore(pg_dsn)
    writer = RecordWriter(store, retry_initial_s=0.05, retry_max_s=0.2)
    await writer.start()
    writer.submit(*_call("before", 1.0))
    assert await writer.flush(10)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # every other backend is terminated
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
        )
    writer.submit(*_call("after", 2.0))
    assert await writer.flush(10)
    await writer.close()
    check = PostgresStore(pg_dsn)
    assert {r["call_id"] for r in check.list_records(RecordFilter())} == {"before", "after"}
    check.close()
