"""The record store: SQLite (WAL) on a single gateway, PostgreSQL when several gateways share one
deployment. Same schema (gateway/records/schema.py), same queries; only the driver and the parameter
marker differ.

The interface is synchronous on purpose: the writer task (writer.py) runs it on one thread of its own,
so a slow or unreachable database never holds the event loop that carries the audio.

Durability: SQLite in WAL mode with `synchronous=NORMAL` loses nothing committed when the *process*
dies (kill -9): a commit is in the WAL file before `commit()` returns; only an OS crash or power loss can
take the last transactions (https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous).
PostgreSQL commits are durable on return with its default `synchronous_commit=on`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.records import schema

Op = tuple[str, dict[str, Any]]
DEFAULT_TENANT = "default"  # gateway/tenants.py DEFAULT_TENANT (not imported: the store stands alone)


def _tenant(d: dict[str, Any]) -> str:
    return str(d.get("tenant") or DEFAULT_TENANT)


class StoreError(Exception):
    """The store could not be reached or refused a write; the writer keeps the ops and retries."""


@dataclass
class RecordFilter:
    caller: str | None = None  # matches caller_key (number or conversation id)
    outcome: str | None = None
    tenant: str | None = None
    profile: str | None = None
    since: float | None = None  # started_at >= (unix seconds)
    until: float | None = None  # started_at < (unix seconds)
    limit: int = 50
    offset: int = 0


CALL_COLUMNS = (
    "call_id",
    "started_at",
    "ended_at",
    "ingress",
    "profile",
    "tenant",
    "caller",
    "caller_key",
    "callee",
    "sip_call_id",
    "worker",
    "outcome",
    "duration_s",
    "analysis",
)
TURN_COLUMNS = ("seq", "role", "item_id", "text", "start_ms", "end_ms", "barged_in", "heard_ms", "latency_ms")


class Store:
    """SQL shared by both drivers; subclasses provide `_connect`, the parameter marker and upserts."""

    dialect = "sqlite"
    marker = "?"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one connection, used by the writer thread and the admin API
        self._conn: Any = None

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> Any:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql if self.marker == "?" else sql.replace("?", self.marker)

    def _cursor(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn.cursor()

    def _run(self, fn: Any) -> Any:
        """Run `fn(cursor)` in one transaction; a lost connection is dropped so the next call reconnects."""
        with self._lock:
            try:
                cur = self._cursor()
                try:
                    result = fn(cur)
                    self._conn.commit()
                    return result
                except BaseException:
                    try:
                        self._conn.rollback()
                    except Exception:
                        self._drop()
                    raise
            except StoreError:
                raise
            except Exception as exc:
                if self._is_connection_error(exc):
                    self._drop()
                raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    def _is_connection_error(self, exc: Exception) -> bool:
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ------------------------------------------------------------------ schema
    def migrate(self) -> int:
        """Apply the missing migrations; returns the schema version now in force."""

        def step(cur: Any) -> int:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            self._lock_schema(cur)
            cur.execute("SELECT MAX(version) FROM schema_version")
            row = cur.fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            for version, _, _ in schema.MIGRATIONS:
                if version <= current:
                    continue
                for stmt in schema.statements(self.dialect, version):
                    cur.execute(stmt)
                cur.execute(self._sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
                current = version
            return current

        return int(self._run(step))

    def _lock_schema(self, cur: Any) -> None:
        """Serialise concurrent migrations (PostgreSQL: several gateways start at once)."""

    def schema_version(self) -> int:
        def q(cur: Any) -> int:
            cur.execute("SELECT MAX(version) FROM schema_version")
            row = cur.fetchone()
            return int(row[0] or 0)

        return int(self._run(q))

    # ------------------------------------------------------------------ writes (the writer thread)
    def apply(self, ops: Sequence[Op]) -> None:
        """Apply a batch of ops in one transaction (all or none)."""

        def tx(cur: Any) -> None:
            for kind, data in ops:
                getattr(self, f"_op_{kind}")(cur, data)

        self._run(tx)

    def _op_call_start(self, cur: Any, d: dict[str, Any]) -> None:
        cols = (
            "call_id",
            "started_at",
            "ingress",
            "profile",
            "tenant",
            "caller",
            "caller_key",
            "callee",
            "sip_call_id",
            "worker",
        )
        row = d | {"tenant": _tenant(d)}
        cur.execute(
            self._sql(self._insert_ignore("calls", cols, "call_id")), tuple(row.get(c, "") for c in cols)
        )

    def _op_call_end(self, cur: Any, d: dict[str, Any]) -> None:
        cur.execute(
            self._sql("UPDATE calls SET ended_at = ?, outcome = ?, duration_s = ? WHERE call_id = ?"),
            (d["ended_at"], d["outcome"], d["duration_s"], d["call_id"]),
        )

    def _op_turn(self, cur: Any, d: dict[str, Any]) -> None:
        cols = ("call_id", *TURN_COLUMNS, "tenant")
        row = d | {"tenant": _tenant(d), "barged_in": int(bool(d.get("barged_in")))}
        cur.execute(
            self._sql(f"INSERT INTO turns ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"),
            tuple(row.get(c) for c in cols),
        )

    def _op_barge_in(self, cur: Any, d: dict[str, Any]) -> None:
        cur.execute(
            self._sql("UPDATE turns SET barged_in = 1, heard_ms = ? WHERE call_id = ? AND item_id = ?"),
            (d.get("heard_ms"), d["call_id"], d["item_id"]),
        )

    def _op_event(self, cur: Any, d: dict[str, Any]) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO events (call_id, seq, at_ms, kind, data, tenant) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (d["call_id"], d["seq"], d["at_ms"], d["kind"], json.dumps(d.get("data", {})), _tenant(d)),
        )

    def _op_analysis(self, cur: Any, d: dict[str, Any]) -> None:
        cur.execute(
            self._sql("UPDATE calls SET analysis = ? WHERE call_id = ?"),
            (json.dumps(d["analysis"]), d["call_id"]),
        )

    def _op_memory(self, cur: Any, d: dict[str, Any]) -> None:
        tenant = _tenant(d)
        cur.execute(
            self._sql("SELECT calls FROM memory WHERE tenant = ? AND caller_key = ?"),
            (tenant, d["caller_key"]),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(
                self._sql(
                    "INSERT INTO memory (tenant, caller_key, profile, summary, turns, calls, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 1, ?)"
                ),
                (
                    tenant,
                    d["caller_key"],
                    d.get("profile", ""),
                    d["summary"],
                    json.dumps(d["turns"]),
                    d["updated_at"],
                ),
            )
        else:
            cur.execute(
                self._sql(
                    "UPDATE memory SET profile = ?, summary = ?, turns = ?, calls = ?, "
                    "updated_at = ? WHERE tenant = ? AND caller_key = ?"
                ),
                (
                    d.get("profile", ""),
                    d["summary"],
                    json.dumps(d["turns"]),
                    int(row[0]) + 1,
                    d["updated_at"],
                    tenant,
                    d["caller_key"],
                ),
            )

    def _op_outcome(self, cur: Any, d: dict[str, Any]) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO outcomes (id, kind, tenant, state, ended_at, doc) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at, "
                "doc = excluded.doc"
            ),
            (d["id"], d["kind"], _tenant(d), d["state"], d.get("ended_at"), json.dumps(d["doc"])),
        )

    def get_outcome(
        self, outcome_id: str, tenant: str | None = None, kind: str | None = None
    ) -> dict[str, Any] | None:
        """A stored outcome's document; with `tenant` / `kind`, only if it is that tenant's / kind."""
        sql, args = "SELECT doc FROM outcomes WHERE id = ?", [outcome_id]
        for col, value in (("tenant", tenant), ("kind", kind)):
            if value is not None:
                sql += f" AND {col} = ?"
                args.append(value)

        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(self._sql(sql), tuple(args))
            row = cur.fetchone()
            return json.loads(row[0]) if row else None

        return self._run(q)  # type: ignore[no-any-return]

    def _insert_ignore(self, table: str, cols: Iterable[str], key: str) -> str:
        cols = list(cols)
        return (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({key}) DO NOTHING"
        )

    # ------------------------------------------------------------------ reads (admin API, memory)
    def list_records(self, f: RecordFilter) -> list[dict[str, Any]]:
        where, args = [], []
        for col, value in (
            ("caller_key", f.caller),
            ("outcome", f.outcome),
            ("tenant", f.tenant),
            ("profile", f.profile),
        ):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        if f.since is not None:
            where.append("started_at >= ?")
            args.append(f.since)
        if f.until is not None:
            where.append("started_at < ?")
            args.append(f.until)
        sql = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, call_id LIMIT ? OFFSET ?"
        args += [int(f.limit), int(f.offset)]

        def q(cur: Any) -> list[dict[str, Any]]:
            cur.execute(self._sql(sql), tuple(args))
            return [_call_row(r) for r in cur.fetchall()]

        return list(self._run(q))

    def get_record(self, call_id: str, tenant: str | None = None) -> dict[str, Any] | None:
        """One call with its turns and events; with `tenant`, only if the call is that tenant's."""

        def q(cur: Any) -> dict[str, Any] | None:
            sql, args = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls WHERE call_id = ?", [call_id]
            if tenant is not None:
                sql, args = sql + " AND tenant = ?", [call_id, tenant]
            cur.execute(self._sql(sql), tuple(args))
            row = cur.fetchone()
            if row is None:
                return None
            rec = _call_row(row)
            cur.execute(
                self._sql(f"SELECT {', '.join(TURN_COLUMNS)} FROM turns WHERE call_id = ? ORDER BY seq"),
                (call_id,),
            )
            rec["turns"] = [
                dict(zip(TURN_COLUMNS, r, strict=True)) | {"barged_in": bool(r[6])} for r in cur.fetchall()
            ]
            cur.execute(
                self._sql("SELECT seq, at_ms, kind, data FROM events WHERE call_id = ? ORDER BY seq"),
                (call_id,),
            )
            rec["events"] = [
                {"seq": r[0], "at_ms": r[1], "kind": r[2], "data": json.loads(r[3])} for r in cur.fetchall()
            ]
            return rec

        return self._run(q)  # type: ignore[no-any-return]

    def get_memory(self, caller_key: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any] | None:
        """What one tenant remembers about a caller (memory is never shared between tenants)."""

        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(
                self._sql(
                    "SELECT caller_key, profile, summary, turns, calls, updated_at FROM memory "
                    "WHERE tenant = ? AND caller_key = ?"
                ),
                (tenant or DEFAULT_TENANT, caller_key),
            )
            r = cur.fetchone()
            if r is None:
                return None
            return {
                "caller": r[0],
                "profile": r[1],
                "summary": r[2],
                "turns": json.loads(r[3]),
                "calls": r[4],
                "updated_at": r[5],
            }

        return self._run(q)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ erasure, retention, audit
    def forget(
        self, caller_key: str, actor: str, now: float | None = None, tenant: str | None = None
    ) -> dict[str, int]:
        """Erase a caller: their calls, turns, events and memory. The audit row keeps counts, not content.
        With `tenant`, only that tenant's records and memory of the caller (a tenant's own erasure);
        without, every tenant's (the operator's)."""
        only = " AND tenant = ?" if tenant is not None else ""
        args = (caller_key, tenant) if tenant is not None else (caller_key,)

        def tx(cur: Any) -> dict[str, int]:
            cur.execute(self._sql("SELECT call_id FROM calls WHERE caller_key = ?" + only), args)
            ids = [r[0] for r in cur.fetchall()]
            counts = self._delete_calls(cur, ids)
            cur.execute(self._sql("DELETE FROM memory WHERE caller_key = ?" + only), args)
            counts["memory"] = max(cur.rowcount, 0)
            self._audit(cur, now, actor, "erase", caller_key, counts, tenant or "")
            return counts

        return dict(self._run(tx))

    def retention(
        self, profile: str, older_than: float, actor: str = "retention", now: float | None = None
    ) -> dict[str, int]:
        """Delete one profile's records and memory last touched before `older_than` (unix seconds)."""

        def tx(cur: Any) -> dict[str, int]:
            cur.execute(
                self._sql("SELECT call_id FROM calls WHERE profile = ? AND started_at < ?"),
                (profile, older_than),
            )
            counts = self._delete_calls(cur, [r[0] for r in cur.fetchall()])
            cur.execute(
                self._sql("DELETE FROM memory WHERE profile = ? AND updated_at < ?"), (profile, older_than)
            )
            counts["memory"] = max(cur.rowcount, 0)
            if any(counts.values()):
                self._audit(cur, now, actor, "retention", profile, counts | {"older_than": older_than})
            return counts

        return dict(self._run(tx))

    def _delete_calls(self, cur: Any, ids: list[str]) -> dict[str, int]:
        counts = {"calls": 0, "turns": 0, "events": 0}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for table in ("turns", "events", "calls"):
                cur.execute(self._sql(f"DELETE FROM {table} WHERE call_id IN ({marks})"), tuple(chunk))
                counts[table] += max(cur.rowcount, 0)
        return counts

    def _audit(
        self,
        cur: Any,
        now: float | None,
        actor: str,
        action: str,
        subject: str,
        detail: dict[str, Any],
        tenant: str = "",
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO audit (at, actor, action, subject, detail, tenant) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (now if now is not None else time.time(), actor, action, subject, json.dumps(detail), tenant),
        )

    def audit_log(self, limit: int = 100, tenant: str | None = None) -> list[dict[str, Any]]:
        """Newest first; with `tenant`, only that tenant's own erasures."""
        where, args = ("WHERE tenant = ? ", (tenant, limit)) if tenant is not None else ("", (limit,))

        def q(cur: Any) -> list[dict[str, Any]]:
            cur.execute(
                self._sql(
                    "SELECT at, actor, action, subject, detail, tenant FROM audit "
                    f"{where}ORDER BY id DESC LIMIT ?"
                ),
                args,
            )
            return [
                {"at": r[0], "actor": r[1], "action": r[2], "subject": r[3], "detail": json.loads(r[4]),
                 "tenant": r[5] or None}
                for r in cur.fetchall()
            ]

        return list(self._run(q))


def _call_row(r: Sequence[Any]) -> dict[str, Any]:
    rec = dict(zip(CALL_COLUMNS, r, strict=True))
    rec["analysis"] = json.loads(rec["analysis"]) if rec["analysis"] else None
    return rec


class SQLiteStore(Store):
    dialect = "sqlite"
    marker = "?"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _connect(self) -> Any:
        # check_same_thread=False: the writer thread and the admin API's threads share it under _lock.
        conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _is_connection_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.OperationalError)


class PostgresStore(Store):
    dialect = "postgres"
    marker = "%s"

    def __init__(self, dsn: str, connect_timeout_s: float = 5.0) -> None:
        super().__init__()
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s

    def _connect(self) -> Any:
        import psycopg  # imported here: a SQLite-only gateway never loads libpq

        return psycopg.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout_s)))

    def _lock_schema(self, cur: Any) -> None:
        cur.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")

    def _is_connection_error(self, exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def open_store(url: str) -> Store:
    """`sqlite:///path/to/records.db` (or a bare path) or `postgresql://user:pass@host:port/db`."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    return SQLiteStore(url.removeprefix("sqlite://"))  # sqlite:///var/lib/x.db -> /var/lib/x.db
