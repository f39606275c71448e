"""The start on a database already at the head: one plain query, and no Alembic imported.

Runs on SQLite, and on PostgreSQL as well when GRIDBOT_TEST_DATABASE_URL names a server
database (scripts/test-postgres.sh).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

import storage.db
from storage.db import SchemaBehind, create_schema, head_revision, make_engine, schema_state
from storage.models import Base
from tests.harness import fresh_database

ROOT = Path(__file__).resolve().parents[2]

# What a start does with the schema (bot.app.build_app, bot.cli's commands), in a process
# of its own, so that what it imports is its own doing.
START = """
import asyncio, sys
from storage.db import create_schema, make_engine

async def start():
    engine = make_engine(sys.argv[1])
    try:
        change = await create_schema(engine)
    finally:
        await engine.dispose()
    print(change.before, change.after, "alembic" in sys.modules)

asyncio.run(start())
"""


def _start(url: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", START, url], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def _second_revision(tmp_path: Path, down: str) -> Path:
    scripts = tmp_path / "migrations"
    shutil.copytree(storage.db.MIGRATIONS, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9002_test.py").write_text(
        f'"""A test revision."""\n\nrevision: str = "9002"\n'
        f'down_revision: str | None = "{down}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n", "utf-8")
    return scripts


async def test_a_start_on_a_database_at_the_head_does_not_import_alembic(
        tmp_path: Path) -> None:
    url = await fresh_database(tmp_path, "m.db")
    head = head_revision()
    # A new database is made the long way, with Alembic.
    assert _start(url) == f"None {head} True"
    # Then every start finds it at the head without it.
    assert _start(url) == f"{head} {head} False"


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert storage.db._files_head(storage.db.MIGRATIONS) == head_revision()


def test_a_revision_added_is_the_head_read_from_the_files(tmp_path: Path) -> None:
    scripts = _second_revision(tmp_path, head_revision())
    assert storage.db._files_head(scripts) == "9002" == head_revision(scripts)


def test_files_it_cannot_read_for_certain_leave_the_head_to_alembic(tmp_path: Path) -> None:
    # A second branch from the same revision: two heads.
    scripts = _second_revision(tmp_path, storage.db.BASELINE)
    assert storage.db._files_head(scripts) is None
    # A value that is not a plain literal.
    versions = tmp_path / "odd" / "versions"
    versions.mkdir(parents=True)
    (versions / "0001_x.py").write_text(
        'revision = make_id()\ndown_revision = None\ndepends_on = None\n', "utf-8")
    assert storage.db._files_head(tmp_path / "odd") is None


def test_the_table_the_quick_look_needs_is_in_the_first_revision() -> None:
    assert storage.db._WITNESS in storage.db._baseline_columns()


def test_nothing_the_app_imports_at_start_imports_alembic_at_module_level() -> None:
    """The one-query start is no use if another module imports Alembic anyway; only the
    migrations themselves may (Alembic loads them)."""
    offenders = []
    for folder in ("bot", "handlers", "storage"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" in path.relative_to(ROOT).parts:
                continue
            for node in ast.parse(path.read_text("utf-8")).body:
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(n == "alembic" or n.startswith("alembic.") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


async def test_a_start_at_the_head_is_one_statement(tmp_path: Path) -> None:
    engine = make_engine(await fresh_database(tmp_path, "m.db"))
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    try:
        await create_schema(engine)
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        change = await create_schema(engine)
        assert (change.before, change.after) == (head_revision(), head_revision())
        # BEGIN (IMMEDIATE, on SQLite) aside, the one query; no foreign-key check of the
        # whole database either, which on SQLite reads every table.
        assert [s for s in statements if not s.startswith("BEGIN")] == [
            f"SELECT v.version_num FROM alembic_version v LEFT JOIN {storage.db._WITNESS} w "
            "ON 1 = 0"]
    finally:
        await engine.dispose()


async def test_a_version_row_left_by_tables_dropped_by_hand_makes_them_again(
        tmp_path: Path) -> None:
    engine = make_engine(await fresh_database(tmp_path, "m.db"))
    try:
        await create_schema(engine)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        change = await create_schema(engine)
        assert (change.before, change.after) == (None, head_revision())
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert set(Base.metadata.tables) <= tables
    finally:
        await engine.dispose()


async def test_a_database_stamped_at_another_revision_goes_the_long_way(
        tmp_path: Path) -> None:
    """At a revision the files' head is not: behind is refused (or upgraded), as before."""
    scripts = _second_revision(tmp_path, head_revision())
    engine = make_engine(await fresh_database(tmp_path, "m.db"))
    try:
        await create_schema(engine)
        with pytest.raises(SchemaBehind):
            await create_schema(engine, upgrade=False, scripts=scripts)
        change = await create_schema(engine, upgrade=True, scripts=scripts)
        assert (change.before, change.after) == (head_revision(), "9002")
        # Now at the test's head: the quick look answers for it too.
        again = await create_schema(engine, upgrade=False, scripts=scripts)
        assert (again.before, again.after) == ("9002", "9002")
        async with engine.connect() as conn:
            versions = (await conn.execute(text(
                "SELECT version_num FROM alembic_version"))).scalars().all()
        assert versions == ["9002"]
        assert (await schema_state(engine, scripts)).current == "9002"
    finally:
        await engine.dispose()
