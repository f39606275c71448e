"""`gridbot db copy --to URL`: a populated SQLite database moved row for row.

The target is PostgreSQL when GRIDBOT_TEST_DATABASE_URL names one (the move the command is
for), else a second SQLite file.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cli import main
from storage.db import make_engine
from storage.models import Base, CaseTimerStep, InboxUpdate
from tests.harness import (
    BUILDING_CHAT,
    RESIDENT,
    empty_database,
    fresh_database,
    isolate_env,
    make_harness,
    server_database,
)
from tests.test_cli import one_error_line


def _rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {t.name: [tuple(r) for r in conn.execute(
        select(t).order_by(*t.primary_key.columns))] for t in Base.metadata.sorted_tables}


async def _all_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine: AsyncEngine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows: dict[str, list[tuple[Any, ...]]] = await conn.run_sync(_rows)
            await conn.rollback()
        return rows
    finally:
        await engine.dispose()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_db_copy_moves_every_row_and_the_bot_goes_on_on_the_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    target = server_database() or f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    # Named again below for the harness on the copy; under pytest-xdist server_database()
    # derives the worker's database from it, so it is put back as it was, not as `target`.
    configured = os.environ.get("GRIDBOT_TEST_DATABASE_URL")
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.delenv("GRIDBOT_TEST_DATABASE_URL", raising=False)

    async def populate() -> str:
        # The source is always the SQLite default, filled by the real app.
        h = await make_harness(tmp_path, db_name="source.db")
        await h.report_in_group()
        await h.say(BUILDING_CHAT, RESIDENT, photo="photo-1", caption="/report 楼道里堆满杂物")
        await h.advance(timedelta(days=3))
        async with h.app.sessions() as db:
            db.add(InboxUpdate(update_id=77, kind="message", status="set_aside",
                               payload={"update_id": 77}, received_at=h.clock.now(),
                               reason="ValidationError at message.chat"))
            await db.commit()
            assert (await db.scalars(select(CaseTimerStep))).first() is not None
        await h.app.close()
        return h.app.settings.database_url

    if target.startswith("postgresql"):
        asyncio.run(empty_database(target))
    source = asyncio.run(populate())
    before = asyncio.run(_all_rows(source))
    assert all(before[t] for t in ("nodes", "people", "roles", "categories", "cases",
                                   "case_events", "case_photos", "case_timer_steps", "outbox",
                                   "inbox", "org_settings"))

    monkeypatch.setenv("GRIDBOT_DATABASE_URL", source)
    code, out, err = _cli(capsys, "db", "copy", "--to", target)
    assert code == 0, err
    assert out.startswith(f"copied {sum(map(len, before.values()))} rows of ")
    assert asyncio.run(_all_rows(target)) == before

    # A second copy into it is refused: it holds rows now.
    code, _, err = _cli(capsys, "db", "copy", "--to", target)
    assert code == 1 and "already holds rows" in one_error_line(err)
    assert asyncio.run(_all_rows(target)) == before

    async def go_on() -> None:
        # The bot on the copy: new rows get new ids (PostgreSQL's sequences were moved on).
        h = await make_harness(tmp_path, db_name="target.db", load=False)
        # Later messages than the source's, as Telegram's would be.
        h.updates._update_ids = itertools.count(1000)
        h.updates._message_ids = itertools.count(1000)
        try:
            case = await h.report_in_group("电梯按钮坏了")
            assert case.id == max(r[0] for r in before["cases"]) + 1
            assert len(await h.cases()) == len(before["cases"]) + 1
        finally:
            await h.app.close()

    if configured:
        monkeypatch.setenv("GRIDBOT_TEST_DATABASE_URL", configured)
    asyncio.run(go_on())


def test_db_copy_names_a_bad_target_without_echoing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", asyncio.run(fresh_database(tmp_path, "s.db")))
    code, _, err = _cli(capsys, "db", "copy", "--to", "nosuchdb://user:s3cret@host/x")
    line = one_error_line(err)
    assert code == 1 and "--to" in line and "s3cret" not in line
    code, _, err = _cli(capsys, "db", "copy", "--to",
                        "postgresql+asyncpg://user:s3cret@127.0.0.1:9/x")
    line = one_error_line(err)
    assert code == 1 and "cannot use the database --to" in line and "s3cret" not in line


def test_places_are_copied_after_the_places_they_belong_to() -> None:
    from storage.copy import _parents_first
    from storage.models import Node

    # A registry reload can give a street a higher id than the community moved under it.
    rows = [{"id": 1, "parent_id": 3}, {"id": 2, "parent_id": 1}, {"id": 3, "parent_id": None}]
    ordered = [r["id"] for r in _parents_first(Node.__table__, rows)]  # type: ignore[arg-type]
    assert ordered == [3, 1, 2]
