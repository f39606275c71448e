"""`gridbot outbox`: what is waiting or stuck, without the texts; `retry` requeues failed ones."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.ops import outbox_admin
from bot.ops.terminal import local_zone
from storage.db import make_engine, make_sessionmaker
from storage.models import Outbox
from tests.harness import (
    BUILDING12_CHAT,
    BUILDING_CHAT,
    HEAD,
    RESIDENT,
    UNIT_CHAT,
    Harness,
    isolate_env,
    make_harness,
)

REPORT = "3单元楼道灯坏了，请联系13812345678"


async def stuck(h: Harness) -> None:
    """One row of each status worth looking at: failed, held, undeliverable, pending."""
    h.api.fail_next(BUILDING_CHAT, 400, "Bad Request: message is too long")
    h.api.forbid(HEAD)
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {REPORT}")  # ack fails; head's card held
    h.api.forbid(BUILDING12_CHAT)
    await h.say(BUILDING12_CHAT, RESIDENT, "/report 12号楼门口积水")  # the group refuses us
    await h.feed(h.updates.message(UNIT_CHAT, RESIDENT, "/report 单元门坏了"), deliver=False)


async def rows(database: str) -> dict[int, Outbox]:
    engine = make_engine(database)
    try:
        async with make_sessionmaker(engine)() as db:
            return {o.id: o for o in (await db.scalars(select(Outbox))).all()}
    finally:
        await engine.dispose()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    isolate_env(monkeypatch, tmp_path)

    async def setup() -> str:
        h = await make_harness(tmp_path)
        await stuck(h)
        await h.app.close()
        return h.app.settings.database_url

    url = asyncio.run(setup())
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", url)
    return url


def by_status(found: dict[int, Outbox], status: str) -> list[Outbox]:
    return [o for o in found.values() if o.status == status]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridbot: error: "), err
    return lines[0]


def test_lists_what_is_not_sent_with_counts_and_no_text(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = asyncio.run(rows(database))
    assert main(["outbox"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    sent = len(by_status(found, "sent"))
    assert lines[0] == (f"outbox: 2 pending, 1 held, 1 failed, 1 undeliverable ({sent} sent, "
                        "0 dropped as stale)")
    assert lines[1].split()[:6] == ["id", "status", "chat", "case", "tries", "created"]
    assert lines[-1] == "times in Asia/Shanghai"
    listed = {int(line.split()[0]): line for line in lines[2:-1]}
    unsent = {i for i, o in found.items() if o.status != "sent"}
    assert set(listed) == unsent
    [failed] = by_status(found, "failed")
    line = listed[failed.id]
    assert re.search(rf"^\s*{failed.id}\s+failed\s+{BUILDING_CHAT}\s+#1\s+1\s+"
                     r"2026-11-23 10:00\s+case:1:ack\s+400 Bad Request: message is too long$",
                     line), line
    [held] = by_status(found, "held")
    assert f" {HEAD} " in listed[held.id] and held.dedupe_key in listed[held.id]
    [lost] = by_status(found, "undeliverable")
    assert "403" in listed[lost.id]
    # No message text: not what residents wrote, not what the bot said.
    for o in found.values():
        for piece in o.text.split("\n"):
            if len(piece.strip()) > 3:
                assert piece.strip() not in out
    assert "13812345678" not in out and "楼道灯" not in out and "已收到" not in out


def test_lists_one_status_and_a_limit(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "--status", "pending"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(" pending " in line for line in lines[2:4])
    assert main(["outbox", "--limit", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[-2] == "… and 4 more (use --limit)"


def test_retry_requeues_every_failed_row(database: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    [failed] = by_status(asyncio.run(rows(database)), "failed")
    assert main(["outbox", "retry"]) == 0
    assert capsys.readouterr().out.strip() == "1 failed outbox message requeued"
    again = asyncio.run(rows(database))[failed.id]
    assert again.status == "pending" and again.attempts == 0 and again.retry_at is None
    assert abs(again.not_before - datetime.now(UTC)) < timedelta(minutes=1)  # now
    assert main(["outbox", "retry"]) == 0
    assert capsys.readouterr().out.strip() == "0 failed outbox messages requeued"


def test_retry_one(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    found = asyncio.run(rows(database))
    [lost] = by_status(found, "undeliverable")
    [held] = by_status(found, "held")
    assert main(["outbox", "retry", str(lost.id)]) == 0
    assert capsys.readouterr().out.strip() == f"outbox message {lost.id} requeued"
    assert asyncio.run(rows(database))[lost.id].status == "pending"
    assert main(["outbox", "retry", str(held.id)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"outbox message {held.id} is held, not failed or undeliverable" in line
    assert main(["outbox", "retry", "99999"]) == 1
    assert "there is no outbox message 99999" in one_error_line(capsys.readouterr().err)
    assert main(["outbox", "retry", "x1"]) == 1
    assert "ID must be an outbox message id" in one_error_line(capsys.readouterr().err)
    assert asyncio.run(rows(database))[held.id].status == "held"


async def test_a_requeued_row_goes_out_on_the_next_pass(h: Harness) -> None:
    h.api.fail_next(BUILDING_CHAT, 400, "Bad Request: message is too long")
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {REPORT}")
    assert await h.outbox_count("failed") == 1
    h.clock.advance(timedelta(minutes=5))
    async with h.app.sessions() as db:
        found = await outbox_admin.listing(db)
        assert found.counts["failed"] == 1 and [r.status for r in found.rows] == ["failed"]
        assert await outbox_admin.retry(db, h.clock.now()) == 1
    await h.deliver()
    assert await h.outbox_count("failed") == 0
    assert any("已收到您的诉求" in t for t in h.texts(BUILDING_CHAT))


async def test_an_empty_outbox(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    try:
        async with h.app.sessions() as db:
            found = await outbox_admin.listing(db)
            text = outbox_admin.render(found, await local_zone(db))
        assert text == ("outbox: 0 pending, 0 held, 0 failed, 0 undeliverable "
                        "(0 sent, 0 dropped as stale)")
    finally:
        await h.app.close()
