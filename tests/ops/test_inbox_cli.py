"""`gridbot inbox`: updates set aside or failed, without what people wrote; `retry` requeues."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.telegram.inbox import Inbox, store
from storage.db import make_engine, make_sessionmaker
from storage.models import InboxUpdate
from tests.harness import RESIDENT, isolate_env, make_harness

SECRET = "my neighbour 13812345678 owes me"


async def inbox_rows(database: str) -> list[InboxUpdate]:
    engine = make_engine(database)
    try:
        async with make_sessionmaker(engine)() as db:
            return list((await db.scalars(select(InboxUpdate).order_by(InboxUpdate.id))).all())
    finally:
        await engine.dispose()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """One update the client cannot read (set aside) and one readable, handled."""
    isolate_env(monkeypatch, tmp_path)

    async def setup() -> str:
        h = await make_harness(tmp_path)
        poison = h.updates.message(RESIDENT, RESIDENT, SECRET)
        del poison["message"]["chat"]  # a field aiogram requires
        fine = h.updates.message(RESIDENT, RESIDENT, "/help")
        await store(h.app.sessions, [poison, fine], h.clock.now())
        await Inbox(h.app.bot, h.app.dp, h.app.sessions, h.clock.now).process_pending()
        await h.app.close()
        return h.app.settings.database_url

    url = asyncio.run(setup())
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", url)
    return url


def test_inbox_lists_set_aside_updates_with_counts_and_no_text(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inbox"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("inbox: 0 new, 1 done, 0 skipped, 1 set aside, 0 failed")
    row = next(line for line in lines if "set_aside" in line)
    assert "message" in row and "missing at message.chat" in row
    assert "13812345678" not in out and "neighbour" not in out
    assert lines[-1] == "times in Asia/Shanghai"  # the registry's time zone


def test_inbox_retry_requeues_one_and_names_what_it_cannot(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    aside = next(r for r in asyncio.run(inbox_rows(database)) if r.status == "set_aside")
    done = next(r for r in asyncio.run(inbox_rows(database)) if r.status == "done")
    assert main(["inbox", "retry", str(done.id)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"gridbot: error: inbox row {done.id} is done, not set aside or failed: nothing to retry")
    assert main(["inbox", "retry", "99999"]) == 1
    assert capsys.readouterr().err.strip() == "gridbot: error: there is no inbox row 99999"
    assert main(["inbox", "retry", "x1"]) == 1
    assert "gridbot: error: ID must be an inbox row id" in capsys.readouterr().err
    assert main(["inbox", "retry", str(aside.id)]) == 0
    assert capsys.readouterr().out.strip() == f"inbox row {aside.id} requeued"
    again = next(r for r in asyncio.run(inbox_rows(database)) if r.id == aside.id)
    assert (again.status, again.attempts, again.reason) == ("new", 0, None)


def test_inbox_retry_without_id_requeues_every_update_with_content(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inbox", "retry"]) == 0
    assert capsys.readouterr().out.strip() == "1 update requeued"
    assert [r.status for r in asyncio.run(inbox_rows(database))] == ["new", "done"]
