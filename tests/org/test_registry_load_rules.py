"""Loading the registry (issue 20, defects 12, 13 and 14): two workers loading it at once on a
new database, its geography (GeoJSON altitudes, overlapping grids), and an explicit null kept
on the first load as on every later one.

Runs on SQLite, and on PostgreSQL when GRIDBOT_TEST_DATABASE_URL names a server (the race of
defect 12 needs it to be a race: two real connections)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cli import _load_registry
from bot.config import Settings
from storage.db import SCHEMA_LOCK, create_schema, make_engine, make_sessionmaker
from storage.models import Category, Node, OrgSettings, Person, Role
from tests.harness import SAMPLE, fresh_database

SAMPLE_TEXT = SAMPLE.read_text("utf-8")


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, bot_token=None, _env_file=None)  # type: ignore[call-arg]


async def table_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            return {m.__tablename__: int(await db.scalar(select(func.count()).select_from(m))
                                         or 0)
                    for m in (Node, Person, Role, Category, OrgSettings)}
    finally:
        await engine.dispose()


# --- defect 12: two workers started together with --registry ----------------------------------


async def test_two_loads_at_once_on_a_new_database(tmp_path: Path) -> None:
    """`gridbot run --registry FILE` twice at once on a new database: each worker creates
    the schema (one waits for the other) and loads the registry. The second load waits for
    the first and finds its rows, instead of inserting the same places again and dying on
    nodes_code_key. Several rounds: the race is a matter of timing."""
    once: dict[str, int] | None = None
    for round_ in range(3):
        url = await fresh_database(tmp_path, f"race{round_}.db")  # a new database each round
        settings = settings_for(url)
        results = await asyncio.gather(_load_registry(settings, SAMPLE),
                                       _load_registry(settings, SAMPLE),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, f"a worker died: {failed[0]!r}"
        assert all(str(r).startswith("registry loaded from") for r in results)
        counts = await table_counts(url)
        once = once or counts
        assert counts == once
    assert once is not None and once["nodes"] > 0 and once["org_settings"] == 1
    # The same as one load alone.
    alone = await fresh_database(tmp_path, "alone.db")
    await _load_registry(settings_for(alone), SAMPLE)
    assert await table_counts(alone) == once


async def _hold_schema_lock(engine: AsyncEngine, held: asyncio.Event,
                            release: asyncio.Event) -> None:
    """What a worker migrating the schema holds: the schema lock on PostgreSQL, the write
    lock on SQLite (every write transaction of the app's engine begins IMMEDIATE)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        else:
            await conn.execute(text("SELECT 1"))
        held.set()
        await release.wait()


async def test_a_load_waits_for_the_schema_lock(tmp_path: Path) -> None:
    """A registry load takes the lock migrations take: while another worker holds it (it is
    creating or upgrading the schema, or loading the registry), the load waits, then goes on
    and succeeds."""
    url = await fresh_database(tmp_path, "lock.db")
    engine = make_engine(url)
    try:
        await create_schema(engine)
        held, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold_schema_lock(engine, held, release))
        await held.wait()
        load = asyncio.create_task(_load_registry(settings_for(url), SAMPLE))
        await asyncio.sleep(0.5)
        assert not load.done(), "the load went ahead while the schema lock was held"
        release.set()
        await holder
        assert (await asyncio.wait_for(load, 30)).startswith("registry loaded from")
    finally:
        await engine.dispose()
    assert (await table_counts(url))["nodes"] > 0
