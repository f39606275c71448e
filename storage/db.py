"""Engine and session factory; SQLite is the embedded default, PostgreSQL the production one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, inspect
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from storage.models import Base


def make_engine(url: str) -> AsyncEngine:
    # A database error's text would otherwise carry the statement's values (what residents
    # wrote, their ids) into tracebacks and logs.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if url.startswith("sqlite"):
        if ":memory:" in url or url.rstrip("/").endswith("sqlite+aiosqlite:"):
            # One shared connection, or every session would see its own empty database.
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            conn.isolation_level = None  # we emit BEGIN ourselves, below
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # Take the write lock when a transaction starts: SQLite has one writer at a time,
            # and a reader that later tries to write fails at once if another wrote meanwhile.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class SchemaOutdated(Exception):
    """The database was made by an earlier Gridbot: tables lack columns this one needs.

    `create_all` adds missing tables, never missing columns; running on regardless would fail
    at the first query that names one, in a loop that would take it for an outage.
    """

    def __init__(self, missing: list[str]) -> None:
        super().__init__(", ".join(missing))
        self.missing = missing


def _missing_columns(conn: Connection) -> list[str]:
    found = inspect(conn)
    missing = []
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in have]
    return missing


async def create_schema(engine: AsyncEngine) -> None:
    """Create what is missing of the schema; refuse a database whose tables are older."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        missing = await conn.run_sync(_missing_columns)
    if missing:
        raise SchemaOutdated(missing)
