"""The record schema as versioned migrations, one list for both stores.

Each migration is plain SQL that SQLite and PostgreSQL both accept, except where a `{...}` placeholder
names a dialect difference (auto-increment keys, JSON columns). `schema_version` holds the highest
applied version; a store applies the missing ones in order inside one transaction each, so two gateways
starting against one PostgreSQL database never apply a migration twice (the version row is the lock).
"""

from __future__ import annotations

DIALECT = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "json": "TEXT", "real": "REAL"},
    "postgres": {"serial": "BIGSERIAL PRIMARY KEY", "json": "TEXT", "real": "DOUBLE PRECISION"},
}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "calls, turns, events, memory, audit",
        [
            # One row per call, written at stream start, updated at the end.
            """CREATE TABLE calls (
            call_id TEXT PRIMARY KEY,
            started_at {real} NOT NULL,
            ended_at {real},
            ingress TEXT NOT NULL DEFAULT '',
            profile TEXT NOT NULL DEFAULT '',
            tenant TEXT NOT NULL DEFAULT '',
            caller TEXT NOT NULL DEFAULT '',
            caller_key TEXT NOT NULL DEFAULT '',
            callee TEXT NOT NULL DEFAULT '',
            sip_call_id TEXT NOT NULL DEFAULT '',
            worker TEXT NOT NULL DEFAULT '',
            outcome TEXT,
            duration_s {real},
            analysis {json}
        )""",
            "CREATE INDEX calls_started ON calls (started_at)",
            "CREATE INDEX calls_caller_key ON calls (caller_key)",
            # What was said, one row per turn, written when the turn's transcript is final.
            """CREATE TABLE turns (
            id {serial},
            call_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            item_id TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL,
            start_ms {real},
            end_ms {real},
            barged_in INTEGER NOT NULL DEFAULT 0,
            heard_ms {real},
            latency_ms {real}
        )""",
            "CREATE INDEX turns_call ON turns (call_id, seq)",
            # Tool calls and results, transfers/handoffs, barge-ins: {kind, data JSON}.
            """CREATE TABLE events (
            id {serial},
            call_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at_ms {real} NOT NULL,
            kind TEXT NOT NULL,
            data {json} NOT NULL
        )""",
            "CREATE INDEX events_call ON events (call_id, seq)",
            # Per caller (number or conversation id): a rolling summary and the last turns.
            """CREATE TABLE memory (
            caller_key TEXT PRIMARY KEY,
            profile TEXT NOT NULL DEFAULT '',
            summary TEXT NOT NULL DEFAULT '',
            turns {json} NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            updated_at {real} NOT NULL
        )""",
            # Erasures and retention runs: who, what, when (never the erased content).
            """CREATE TABLE audit (
            id {serial},
            at {real} NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail {json} NOT NULL
        )""",
        ],
    ),
    (
        2,
        "every row carries its tenant; caller memory keyed per tenant",
        [
            # Rows written before tenants existed belong to the install's one tenant, `default`
            # (gateway/tenants.py). A call row's tenant was the stream metadata's `tenant`, else ''.
            "UPDATE calls SET tenant = 'default' WHERE tenant = ''",
            "CREATE INDEX calls_tenant ON calls (tenant, started_at)",
            "ALTER TABLE turns ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
            "UPDATE turns SET tenant = COALESCE((SELECT c.tenant FROM calls c "
            "WHERE c.call_id = turns.call_id), 'default')",
            "ALTER TABLE events ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
            "UPDATE events SET tenant = COALESCE((SELECT c.tenant FROM calls c "
            "WHERE c.call_id = events.call_id), 'default')",
            "ALTER TABLE audit ADD COLUMN tenant TEXT NOT NULL DEFAULT ''",  # '' = an operator-wide action
            # Memory was keyed by caller alone: the same caller calling two tenants shared one memory.
            # SQLite cannot change a primary key in place, so the table is rebuilt (both dialects alike).
            """CREATE TABLE memory_v2 (
            tenant TEXT NOT NULL,
            caller_key TEXT NOT NULL,
            profile TEXT NOT NULL DEFAULT '',
            summary TEXT NOT NULL DEFAULT '',
            turns {json} NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            updated_at {real} NOT NULL,
            PRIMARY KEY (tenant, caller_key)
        )""",
            "INSERT INTO memory_v2 (tenant, caller_key, profile, summary, turns, calls, updated_at) "
            "SELECT 'default', caller_key, profile, summary, turns, calls, updated_at FROM memory",
            "DROP TABLE memory",
            "ALTER TABLE memory_v2 RENAME TO memory",
        ],
    ),
    (
        3,
        "outcomes of what the gateway did outside a call's stream (outbound calls), kept over a restart",
        [
            # One row per outbound call (gateway/outbound/): its final state and its call object as the
            # admin API shows it (numbers masked and strings redacted by the profile's policy).
            """CREATE TABLE outcomes (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            tenant TEXT NOT NULL,
            state TEXT NOT NULL,
            ended_at {real},
            doc {json} NOT NULL
        )""",
            "CREATE INDEX outcomes_tenant ON outcomes (tenant, kind, ended_at)",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]


def statements(dialect: str, version: int) -> list[str]:
    subst = DIALECT[dialect]
    for v, _, stmts in MIGRATIONS:
        if v == version:
            return [s.format(**subst) for s in stmts]
    raise KeyError(version)
