"""Alembic migrations: empty to head equals the models, adoption, upgrades that keep every row.

Runs on SQLite, and on PostgreSQL as well when GRIDBOT_TEST_DATABASE_URL names a server
database (scripts/test-postgres.sh).
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

import storage.db
from bot.cli import main
from storage.db import (
    BASELINE,
    SchemaAhead,
    SchemaBehind,
    alembic_config,
    create_schema,
    head_revision,
    make_engine,
    schema_state,
)
from storage.models import Base, CaseTimerStep
from tests.harness import (
    BUILDING_CHAT,
    RESIDENT,
    SAMPLE,
    Harness,
    fresh_database,
    isolate_env,
    make_harness,
)

# A second revision for the upgrade tests: a column and an index on `cases`. On SQLite the
# table is rebuilt (copied, dropped, renamed), as most real changes to a SQLite table are:
# the step where rows that point at it (events, timer steps that cascade) could be lost.
SECOND = '''"""A test revision."""

import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("cases", recreate="always" if sqlite else "auto") as batch:
        batch.add_column(sa.Column("test_note", sa.String(40), nullable=True))
    op.create_index("ix_test_cases_level", "cases", ["level"])


def downgrade() -> None:
    op.drop_index("ix_test_cases_level", "cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("test_note")
'''


def _drift(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


# Columns later revisions add to tables that were there before them: a database from
# before such a revision has not got them, so rows are compared without them.
ADDED_COLUMNS = {
    ("org_settings", "registry_version"),
    # 0004: the workflow of the standard.
    *(("cases", c) for c in ("extended_seconds", "extension_count", "request_at", "review_at",
                             "checked", "checked_at", "whistle_due_at")),
    ("categories", "check_required"),
    *(("org_settings", c) for c in ("max_extensions", "extension_answer_within", "check_all",
                                    "check_within", "whistle_ack_within")),
    # 0005: the ledger and the month.
    ("categories", "sla_unit"), ("case_events", "level"),
    *(("org_settings", c) for c in ("calendar", "digest_at", "score_weights")),
    *(("outbox", c) for c in ("upload", "upload_name", "upload_kind")),
    # 0006: smart intake.
    ("categories", "keywords"), ("nodes", "boundary"), ("nodes", "lon"), ("nodes", "lat"),
    *(("cases", c) for c in ("voice_file_id", "voice_kind", "voice_seconds")),
    # 0007: duplicates, merge and split, notices.
    *(("cases", c) for c in ("followers", "merged_into_id", "split_from_id")),
    *(("org_settings", c) for c in ("duplicate_window", "duplicate_radius")),
    # 0008: the deadline a category change or a registry edit could not move.
    ("cases", "deadline_offset_seconds"),
    # 0009: the reminder to a department that acknowledged a whistle but is not done.
    ("cases", "whistle_acked_at"),
    # 0010: a community's hotline and a building's poster key.
    ("nodes", "hotline"), ("nodes", "door_key"),
    # 0011: the grid's own rounds.
    ("org_settings", "patrol_radius"), ("org_settings", "care_kinds"),
    ("cases", "source"), ("cases", "patrol_id"),
}


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table there is, in the models' columns; a table a later revision
    adds (empty after the upgrade) does not tell two databases apart."""
    present = set(inspect(conn).get_table_names())
    found = {t.name: [tuple(r) for r in conn.execute(
        select(*[c for c in t.columns if (t.name, c.name) not in ADDED_COLUMNS])
        .order_by(*t.primary_key.columns))]
        for t in Base.metadata.sorted_tables if t.name in present}
    return {name: rows for name, rows in found.items() if rows}


async def _sync(engine: AsyncEngine, fn: Any, *args: Any) -> Any:
    async with engine.connect() as conn:
        result = await conn.run_sync(fn, *args)
        await conn.commit()
    return result


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


async def _populated(tmp_path: Path) -> tuple[Harness, str]:
    """A database the real app filled: registry, a group report, a private report with a
    photo, a reminder and an escalation taken by the sweep, messages delivered."""
    h = await make_harness(tmp_path)
    await h.report_in_group()
    await h.say(BUILDING_CHAT, RESIDENT, photo="photo-1", caption="/report 楼道里堆满杂物")
    await h.advance(timedelta(days=3))
    assert len(await h.cases()) == 2
    async with h.app.sessions() as db:
        assert (await db.scalars(select(CaseTimerStep))).first() is not None
    return h, h.app.settings.database_url


def _second_revision(tmp_path: Path) -> Path:
    scripts = tmp_path / "migrations"
    shutil.copytree(storage.db.MIGRATIONS, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9002_test.py").write_text(SECOND.format(down=head_revision()),
                                                        "utf-8")
    return scripts


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    isolate_env(monkeypatch, tmp_path)
    return monkeypatch


# --- empty to head ----------------------------------------------------------------------------


async def test_every_migration_from_empty_to_head_makes_exactly_the_models_schema(
        tmp_path: Path) -> None:
    engine = make_engine(await fresh_database(tmp_path, "m.db"))
    try:
        change = await create_schema(engine)
        assert change.before is None and change.after == head_revision()
        assert await _sync(engine, _drift) == []
        state = await schema_state(engine)
        assert (state.current, state.tables) == (head_revision(), True)
        # Once more changes nothing.
        again = await create_schema(engine)
        assert (again.before, again.after) == (head_revision(), head_revision())
    finally:
        await engine.dispose()


async def test_each_revision_goes_down_and_up_again(tmp_path: Path) -> None:
    engine = make_engine(await fresh_database(tmp_path, "m.db"))
    scripts = storage.db._scripts(None)
    order = [s.revision for s in reversed(list(scripts.walk_revisions()))]

    def stairway(conn: Connection) -> list[str]:
        config = alembic_config(conn)
        command.stamp(config, "base", purge=True)
        seen = []
        for revision in order:
            command.upgrade(config, revision)
            command.downgrade(config, "-1")
            command.upgrade(config, revision)
            seen.append(MigrationContext.configure(conn).get_current_heads()[0])
        return seen

    try:
        assert await _sync(engine, stairway) == order
        assert await _sync(engine, _drift) == []
    finally:
        await engine.dispose()


async def test_two_workers_starting_on_one_new_database_create_it_once(
        tmp_path: Path) -> None:
    url = await fresh_database(tmp_path, "m.db")
    if url.startswith("sqlite"):
        pytest.skip("several workers are a PostgreSQL deployment")
    engines = [make_engine(url), make_engine(url)]
    try:
        changes = await asyncio.gather(*(create_schema(e) for e in engines))
        assert sorted(c.before or "new" for c in changes) == sorted([head_revision(), "new"])
        assert await _sync(engines[0], _drift) == []
    finally:
        for e in engines:
            await e.dispose()


# --- adoption of a create_all database ---------------------------------------------------------


def test_a_database_made_by_create_all_is_adopted_with_every_row(
        tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    async def prepare() -> tuple[str, dict[str, list[tuple[Any, ...]]]]:
        h, url = await _populated(tmp_path)
        await h.app.close()
        engine = make_engine(url)

        def as_before_migrations(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
            # What `create_all` made: revision BASELINE's tables, no version table.
            command.downgrade(alembic_config(conn), BASELINE)
            conn.execute(text("DROP TABLE alembic_version"))
            return _rows(conn)

        rows = await _sync(engine, as_before_migrations)
        await engine.dispose()
        return url, rows

    url, before = asyncio.run(prepare())
    assert sum(map(len, before.values())) > 50
    env.setenv("GRIDBOT_DATABASE_URL", url)

    code, out, _ = _cli(capsys, "db", "current")
    assert code == 0 and "made before schema migrations" in out
    code, out, _ = _cli(capsys, "db", "upgrade")
    assert code == 0 and "adopted" in out and head_revision() in out
    code, out, _ = _cli(capsys, "db", "current")
    assert (code, out) == (0, f"{head_revision()} (head)")

    async def after() -> dict[str, list[tuple[Any, ...]]]:
        engine = make_engine(url)
        try:
            assert await _sync(engine, _drift) == []
            rows: dict[str, list[tuple[Any, ...]]] = await _sync(engine, _rows)
            return rows
        finally:
            await engine.dispose()

    assert asyncio.run(after()) == before


# --- a database that is behind ------------------------------------------------------------------


def test_a_database_behind_is_refused_then_upgraded_with_every_row(
        tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_cli import closed_port, one_error_line

    async def prepare() -> tuple[str, dict[str, list[tuple[Any, ...]]]]:
        h, url = await _populated(tmp_path)
        await h.app.close()
        engine = make_engine(url)
        rows = await _sync(engine, _rows)
        await engine.dispose()
        return url, rows

    url, before = asyncio.run(prepare())
    sqlite = url.startswith("sqlite")
    at = head_revision()  # where the database stands: the head before the test's revision
    env.setattr(storage.db, "MIGRATIONS", _second_revision(tmp_path))
    env.setenv("GRIDBOT_DATABASE_URL", url)
    env.setenv("GRIDBOT_BOT_TOKEN", "123456:" + "A" * 35)
    env.setenv("GRIDBOT_API_URL", f"http://127.0.0.1:{closed_port()}")

    code, out, _ = _cli(capsys, "db", "current")
    assert (code, out) == (0, f"{at}; head is 9002: run `gridbot db upgrade`")
    if sqlite:
        # The embedded default upgrades itself at start; this run then stops at the Bot API.
        code, _, err = _cli(capsys, "run")
        assert code == 1 and "cannot reach the Bot API" in one_error_line(err)
        # With a copy of the file as it was, the way back to the Gridbot before.
        kept = Path(url.removeprefix("sqlite+aiosqlite:///") + f".schema-{at}.bak")
        assert kept.stat().st_mode & 0o777 == 0o600

        async def in_copy() -> tuple[str, dict[str, list[tuple[Any, ...]]]]:
            engine = make_engine(f"sqlite+aiosqlite:///{kept}")
            try:
                state = await schema_state(engine)
                return state.current or "", await _sync(engine, _rows)
            finally:
                await engine.dispose()

        assert asyncio.run(in_copy()) == (at, before)
    else:
        for argv in (["run"], ["registry", "load", str(SAMPLE)], ["outbox"]):
            code, _, err = _cli(capsys, *argv)
            line = one_error_line(err)
            assert code == 1 and "run `gridbot db upgrade`" in line, line
            assert f"at schema {at}, this Gridbot needs 9002" in line
        code, out, _ = _cli(capsys, "db", "upgrade")
        assert (code, out) == (0, f"upgraded the database from schema {at} to 9002")
    code, out, _ = _cli(capsys, "db", "current")
    assert (code, out) == (0, "9002 (head)")

    async def after() -> dict[str, list[tuple[Any, ...]]]:
        engine = make_engine(url)
        try:
            def look(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
                columns = {c["name"] for c in inspect(conn).get_columns("cases")}
                indexes = {i["name"] for i in inspect(conn).get_indexes("cases")}
                assert "test_note" in columns and "ix_test_cases_level" in indexes
                if sqlite:
                    assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                return _rows(conn)

            rows: dict[str, list[tuple[Any, ...]]] = await _sync(engine, look)
            return rows
        finally:
            await engine.dispose()

    assert asyncio.run(after()) == before


async def test_0004_makes_a_reopen_event_a_rework_and_keeps_every_row(tmp_path: Path) -> None:
    """返工 is one event kind: a database from before 0004 whose history has a 不满意
    reopening (`reopen`) comes out with it as `rework`, every other row as it was; the way
    back names it `reopen` again."""
    h, url = await _populated(tmp_path)
    await h.app.close()
    engine = make_engine(url)

    def at_0003_with_a_reopen(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
        command.downgrade(alembic_config(conn), "0003")
        case_id, at = conn.execute(text("SELECT id, reported_at FROM cases ORDER BY id")).first()
        conn.execute(text(
            "INSERT INTO case_events (case_id, at, actor_id, action, from_status, to_status,"
            " note) VALUES (:c, :at, :a, 'reopen', 'resolved', 'accepted', '还是很脏')"),
            {"c": case_id, "at": at, "a": RESIDENT})
        return _rows(conn)

    def upgraded(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
        command.upgrade(alembic_config(conn), "head")
        return _rows(conn)

    def downgraded(conn: Connection) -> list[str]:
        command.downgrade(alembic_config(conn), "0003")
        return list(conn.execute(text(
            "SELECT action FROM case_events WHERE note = '还是很脏'")).scalars())

    try:
        before = await _sync(engine, at_0003_with_a_reopen)
        after = await _sync(engine, upgraded)
        assert await _sync(engine, _drift) == []
        # The event's action is the only difference: (id, case_id, at, actor, action, ...).
        renamed = [(*r[:4], "rework", *r[5:]) if r[4] == "reopen" else r
                   for r in before["case_events"]]
        assert any(r[4] == "reopen" for r in before["case_events"])
        assert after == {**before, "case_events": renamed}
        settings = await _sync(engine, lambda conn: tuple(conn.execute(text(
            "SELECT max_extensions, extension_answer_within, check_all, check_within,"
            " whistle_ack_within FROM org_settings")).one()))
        assert settings == (1, 86400, False, 86400, 1800)
        assert await _sync(engine, downgraded) == ["reopen"]
    finally:
        await engine.dispose()


async def test_upgrade_flag_decides_and_sqlite_upgrades_by_default(tmp_path: Path) -> None:
    scripts = _second_revision(tmp_path)
    url = await fresh_database(tmp_path, "m.db")
    engine = make_engine(url)
    try:
        await create_schema(engine)  # at the package's head, one behind the test's
        with pytest.raises(SchemaBehind) as behind:
            await create_schema(engine, upgrade=False, scripts=scripts)
        assert (behind.value.current, behind.value.head) == (head_revision(), "9002")
        if url.startswith("sqlite"):
            change = await create_schema(engine, scripts=scripts)
        else:
            with pytest.raises(SchemaBehind):
                await create_schema(engine, scripts=scripts)
            change = await create_schema(engine, upgrade=True, scripts=scripts)
        assert (change.before, change.after) == (head_revision(), "9002")
        # The package's own revisions do not know 9002: a newer Gridbot made this database.
        with pytest.raises(SchemaAhead) as ahead:
            await create_schema(engine, upgrade=True)
        assert "newer Gridbot" in str(ahead.value)
        state = await schema_state(engine)
        assert (state.current, state.head) == ("9002", head_revision())
    finally:
        await engine.dispose()


def test_a_database_from_a_newer_gridbot_is_refused_in_one_line(
        tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_cli import one_error_line

    async def prepare() -> str:
        url = await fresh_database(tmp_path, "m.db")
        engine = make_engine(url)
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await engine.dispose()
        return url

    env.setenv("GRIDBOT_DATABASE_URL", asyncio.run(prepare()))
    for argv in (["db", "upgrade"], ["outbox"]):
        code, _, err = _cli(capsys, *argv)
        line = one_error_line(err)
        assert code == 1 and "schema 9999" in line and "newer Gridbot" in line


def test_db_upgrade_creates_a_new_database(
        tmp_path: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = asyncio.run(fresh_database(tmp_path, "new.db"))
    env.setenv("GRIDBOT_DATABASE_URL", url)
    code, out, _ = _cli(capsys, "db", "current")
    assert code == 0 and out.startswith("no Gridbot schema yet")
    code, out, _ = _cli(capsys, "db", "upgrade")
    assert (code, out) == (0, f"created a new database at schema {head_revision()}")
    code, out, _ = _cli(capsys, "db", "upgrade")
    assert (code, out) == (0, f"the database is at schema {head_revision()}, the newest")

