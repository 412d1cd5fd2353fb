"""Fixtures for the record tests: both stores (SQLite in a temp dir, a real PostgreSQL on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import pg_bin, postgres_server

from gateway.records.store import PostgresStore, SQLiteStore, Store


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    if pg_bin() is None:
        pytest.skip("PostgreSQL not installed (requirements/apt.txt)")
    with postgres_server() as dsn:
        yield dsn


def _reset_pg(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A records URL for an empty store, one of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/records.db"
    dsn = request.getfixturevalue("pg_dsn")
    _reset_pg(dsn)
    return dsn


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s: Store = (
        PostgresStore(store_url)
        if store_url.startswith("postgresql")
        else SQLiteStore(store_url.removeprefix("sqlite://"))
    )
    s.migrate()
    yield s
    s.close()


# ---------------------------------------------------------------- a gateway with records, a Realtime fake
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "gateway"))  # realtime_fake, gw_helpers

from collections.abc import AsyncIterator, Callable  # noqa: E402
from typing import Any  # noqa: E402

from realtime_fake import fake_servers  # noqa: E402
from rec_helpers import GW_HOST, TOKEN  # noqa: E402

from gateway.fallback import FallbackPrompts  # noqa: E402
from gateway.profiles import load_profiles  # noqa: E402
from gateway.serve import Gateway  # noqa: E402
from gateway.settings import DEFAULT_PROFILES_DIR, Settings  # noqa: E402


@pytest.fixture(scope="session")
def fallback_prompts_records() -> FallbackPrompts:
    return FallbackPrompts(load_profiles(DEFAULT_PROFILES_DIR, "front-desk"))


@pytest.fixture
async def records_gateway(fallback_prompts_records: FallbackPrompts) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def factory(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "media_host": GW_HOST,
            "media_port": 0,
            "admin_host": GW_HOST,
            "admin_port": 0,
            "auth_tokens": TOKEN,
            "shutdown_timeout_s": 2.0,
            "model_connect_timeout_s": 2.0,
        }
        values.update(overrides)
        gw = Gateway(Settings(**values), fallback=fallback_prompts_records)
        await gw.start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        if not gw.draining:
            await gw.shutdown(drain_timeout=0.5)


@pytest.fixture
async def realtime_fake() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers() as factory:
        yield factory
