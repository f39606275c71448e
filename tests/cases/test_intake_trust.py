"""Intake must never stop: poison updates, update ids that restart, database outages, SIGTERM,
a revoked token, chatter seen by a bot made group admin, and pruning the inbox in batches.

Over HTTP against `tests.fakeserver.FakeBotApi`: the bot's real session, inbox poller and
processor, sweep and sender in-process, or a real `gridbot run` process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from pydantic import SecretStr
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from bot.app import App, build_app
from bot.cases.registry_edit import apply_registry
from bot.config import Settings
from bot.org.registry import parse_registry
from bot.telegram.fake import FIXED_DATE, chat_json
from bot.telegram.inbox import Inbox, prune, store
from bot.telegram.polling import every
from storage.models import Case, CasePhoto, InboxUpdate
from tests.e2e import (
    TOKEN,
    album_part,
    building_chat,
    count_cases,
    report_update,
    resident,
    wait_for,
    write_registry,
)
from tests.fakeserver import FakeBotApi
from tests.harness import BUILDING_CHAT, RESIDENT, Harness, fresh_database, server_database

ROOT = Path(__file__).resolve().parents[2]


def poll_message(user_id: int, message_id: int) -> dict[str, Any]:
    """A poll sent to the bot, from a Bot API server whose polls lack fields aiogram needs."""
    return {"message": {
        "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(user_id),
        "from": {"id": user_id, "is_bot": False, "first_name": "居民"},
        "poll": {"id": "p1", "total_voter_count": 0, "is_closed": False,
                 "is_anonymous": True, "type": "regular", "allows_multiple_answers": False},
    }}


def group_message(chat_id: int, user_id: int, text: str, message_id: int,
                  **extra: Any) -> dict[str, Any]:
    return {"message": {
        "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(chat_id),
        "from": {"id": user_id, "is_bot": False, "first_name": f"居民{user_id}"},
        "text": text, **extra,
    }}


class Running:
    """The bot's loops in-process: poller, processor, sweep and sender."""

    def __init__(self, app: App, server: FakeBotApi) -> None:
        self.app, self.server = app, server
        self.stop = asyncio.Event()
        self.inbox = Inbox(app.bot, app.dp, app.sessions, app.ctx.clock.now, concurrency=1)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        allowed = self.app.dp.resolve_used_update_types()
        self.tasks = [
            asyncio.create_task(self.inbox.poll(self.stop, allowed)),
            asyncio.create_task(self.inbox.process(self.stop)),
            asyncio.create_task(every(0.3, self.app.sweep, self.stop, "the sweep")),
            asyncio.create_task(self.app.delivery.run(self.stop, tick=0.2,
                                                      also=self.app.tick)),
        ]

    async def close(self) -> None:
        self.stop.set()
        self.app.delivery.wake()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.app.close()

    async def rows(self) -> list[InboxUpdate]:
        async with self.app.sessions() as db:
            return list((await db.scalars(select(InboxUpdate)
                                          .order_by(InboxUpdate.received_at))).all())


@pytest.fixture
async def server() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    yield fake
    await fake.stop()


async def prepared(tmp_path: Path, server: FakeBotApi) -> Running:
    url = await server.start()
    settings = Settings(database_url=await fresh_database(tmp_path, "intake.db"),
                        api_url=url, bot_token=SecretStr(TOKEN), _env_file=None)
    app = await build_app(settings)
    registry = write_registry(tmp_path / "district.yaml", 2)
    async with app.sessions() as db:
        await apply_registry(db, parse_registry(registry.read_text("utf-8")), app.ctx.clock)
    await app.identify()
    return Running(app, server)


# --- a poison update ------------------------------------------------------------------------


async def test_unreadable_update_is_set_aside_and_the_batch_around_it_handled(
        tmp_path: Path, server: FakeBotApi) -> None:
    run = await prepared(tmp_path, server)
    try:
        server.push(report_update(building_chat(0), resident(0, 1), "楼道灯坏了", 101))
        poison = server.push(poll_message(resident(1, 1), 102))
        server.push(report_update(building_chat(1), resident(1, 2), "门禁坏了", 103))
        run.start()

        async def handled() -> bool:
            return await count_cases(run.app) == 2 and server.unconfirmed == 0

        await wait_for(handled, 20, "both reports handled and the batch confirmed")
        await asyncio.sleep(1.5)  # more polls and passes: the poison is not fetched or retried
        for task in run.tasks:
            assert not task.done(), "a loop ended"
        rows = {r.update_id: r for r in await run.rows()}
        aside = rows[poison]
        assert aside.status == "set_aside" and aside.kind == "message"
        assert aside.payload is not None and "poll" in aside.payload["message"]
        assert aside.reason is not None and "missing at message.poll.question" in aside.reason
        assert "regular" not in aside.reason  # the reason names fields, never values
        assert [r.status for r in rows.values()].count("done") == 2
        # Confirmed (offset moved past it) and never answered again.
        answered = [p for m, p in server.calls if m == "getupdates"]
        assert int(answered[-1].get("offset") or 0) > poison + 1
    finally:
        await run.close()


# --- update ids are not forever ----------------------------------------------------------------


async def test_ids_restarted_lower_after_a_quiet_week_are_followed(
        tmp_path: Path, server: FakeBotApi) -> None:
    run = await prepared(tmp_path, server)
    now = run.app.ctx.clock.now()
    try:
        async with run.app.sessions() as db:
            # Three weeks ago ids were around 500; then Telegram restarted them at 7, and the
            # bot (before a restart) received 7 and 8 yesterday.
            for update_id, age in ((500, 21), (501, 21), (502, 21), (7, 1), (8, 1)):
                db.add(InboxUpdate(update_id=update_id, payload=None, status="done",
                                   attempts=1, received_at=now - timedelta(days=age)))
            await db.commit()
        server.restart_ids(9)
        server.push(report_update(building_chat(0), resident(0, 1), "楼道灯坏了", 201))
        server.push(report_update(building_chat(1), resident(1, 1), "门禁坏了", 202))
        # Weeks later the numbering reaches an id the inbox still holds from long ago.
        server.push(report_update(building_chat(0), resident(0, 2), "垃圾没人清", 203),
                    update_id=500)
        run.start()

        async def handled() -> bool:
            return await count_cases(run.app) == 3

        await wait_for(handled, 20, "three new updates handled")
        offsets = [int(p["offset"]) for m, p in server.calls
                   if m == "getupdates" and p.get("offset")]
        assert offsets[0] == 9  # after the update received last, not after the highest id
    finally:
        await run.close()


async def test_redelivery_within_two_days_is_dropped_but_an_old_id_weeks_later_is_new(
        h: Harness) -> None:
    inbox = Inbox(h.app.bot, h.app.dp, h.app.sessions, h.clock.now, concurrency=1)
    first = h.updates.message(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    await store(h.app.sessions, [Update.model_validate(first)], h.clock.now())
    h.clock.advance(timedelta(hours=20))  # Telegram delivered it again (we never confirmed)
    await store(h.app.sessions, [Update.model_validate(first)], h.clock.now())
    await inbox.process_pending()
    assert len(await h.cases()) == 1
    h.clock.advance(timedelta(days=20))
    again = h.updates.message(BUILDING_CHAT, RESIDENT, "/report 门口积水")
    again["update_id"] = first["update_id"]  # ids restarted and reached it again
    await store(h.app.sessions, [Update.model_validate(again)], h.clock.now())
    await inbox.process_pending()
    assert [c.description for c in await h.cases()] == ["楼道灯坏了", "门口积水"]


# --- transient database errors -----------------------------------------------------------------


class DatabaseSwitch:
    """Makes every statement fail as SQLite does when it stays busy, while `down`."""

    def __init__(self, app: App) -> None:
        self.down = False
        self.failures = 0
        event.listen(app.engine.sync_engine, "before_cursor_execute", self._check)

    def _check(self, *args: Any) -> None:
        if self.down:
            self.failures += 1
            raise OperationalError("statement", None, sqlite3.OperationalError("database "
                                                                               "is locked"))


async def test_database_outage_is_waited_out_and_logged_once_per_loop(
        tmp_path: Path, server: FakeBotApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    run = await prepared(tmp_path, server)
    switch = DatabaseSwitch(run.app)
    try:
        run.start()
        await wait_for(_polled(server), 10, "the first getUpdates")
        switch.down = True
        server.push(report_update(building_chat(0), resident(0, 1), "楼道灯坏了", 301))
        await asyncio.sleep(2.5)
        # Not stored, so not confirmed: Telegram still holds it.
        assert server.unconfirmed == 1
        switch.down = False

        async def handled() -> bool:
            return (await count_cases(run.app) == 1
                    and any("已收到" in r.text for r in server.to(building_chat(0))))

        await wait_for(handled, 30, "the report handled once the database is back")
        for task in run.tasks:
            assert not task.done(), "a loop ended"
        assert switch.failures > 6
        for what in ("storing received updates", "handling stored updates", "the sweep"):
            failed = [r for r in caplog.records if r.getMessage().startswith(f"{what} failed")]
            assert len(failed) == 1, (what, [r.getMessage() for r in failed])
            assert "OperationalError" in failed[0].getMessage()
    finally:
        switch.down = False
        await run.close()


def _polled(server: FakeBotApi) -> Any:
    async def check() -> bool:
        return any(m == "getupdates" for m, _ in server.calls)

    return check


# --- a bot made group admin sees every message -------------------------------------------------


async def test_group_chatter_is_not_kept_but_reports_and_album_parts_are(
        tmp_path: Path, server: FakeBotApi) -> None:
    run = await prepared(tmp_path, server)
    chat = building_chat(0)
    try:
        chatter = server.push(group_message(chat, resident(0, 1),
                                            "parcel at gate, call 13912345678", 401))
        reply = server.push(group_message(
            chat, resident(0, 2), "thanks neighbour see you", 402,
            reply_to_message={"message_id": 401, "date": FIXED_DATE, "chat": chat_json(chat),
                              "from": {"id": resident(0, 1), "is_bot": False,
                                       "first_name": "a"}, "text": "x"}))
        unknown = server.push(group_message(chat, resident(0, 3), "/foo private matter", 403,
                                            entities=[{"type": "bot_command", "offset": 0,
                                                       "length": 4}]))
        server.push(report_update(chat, resident(0, 4), "楼道灯坏了", 404))
        server.push(album_part(chat, resident(0, 5), 405, "album-1", "ph-a", "/report 墙皮脱落"))
        server.push(album_part(chat, resident(0, 5), 406, "album-1", "ph-b", None))
        run.start()

        async def handled() -> bool:
            return await count_cases(run.app) == 2 and server.unconfirmed == 0

        await wait_for(handled, 20, "the report and the album filed")
        rows = {r.update_id: r for r in await run.rows()}
        assert rows[chatter].status == "skipped" and rows[chatter].payload is None
        assert rows[reply].status == "skipped" and rows[reply].payload is None
        # A command nobody handles in a group: handled as nothing, its text not kept.
        assert rows[unknown].status == "done" and rows[unknown].payload is None
        async with run.app.sessions() as db:
            photos = await db.scalar(select(func.count()).select_from(CasePhoto))
            cases = (await db.scalars(select(Case.description))).all()
        assert photos == 2 and set(cases) == {"楼道灯坏了", "墙皮脱落"}
    finally:
        await run.close()
    if server_database():
        return  # the SQLite files are read below; on a server the rows above say it
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("intake.db*"))
    for words in (b"parcel at gate", b"13912345678", b"see you", b"private matter"):
        assert words not in stored, words


# --- pruning -------------------------------------------------------------------------------


async def test_prune_deletes_in_batches_by_received_time_and_keeps_what_matters(
        h: Harness) -> None:
    now = h.clock.now()
    async with h.app.sessions() as db:
        db.add_all(InboxUpdate(update_id=10_000 + i, payload=None, status="done", attempts=1,
                               received_at=now - timedelta(days=8, minutes=i))
                   for i in range(2500))
        db.add_all(InboxUpdate(update_id=20_000 + i, payload={"update_id": 20_000 + i},
                               status="new", attempts=0, received_at=now - timedelta(days=9))
                   for i in range(3))
        db.add_all(InboxUpdate(update_id=30_000 + i, payload={"update_id": 30_000 + i},
                               status="set_aside", attempts=0,
                               received_at=now - timedelta(days=days))
                   for i, days in enumerate((10, 10, 40)))
        db.add(InboxUpdate(update_id=40_000, payload=None, status="done", attempts=1,
                           received_at=now - timedelta(days=8)))  # received last
        await db.commit()
    deletes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM INBOX"):
            deletes.append(statement)

    event.listen(h.app.engine.sync_engine, "before_cursor_execute", count)
    try:
        await prune(h.app.sessions, now)
    finally:
        event.remove(h.app.engine.sync_engine, "before_cursor_execute", count)
    async with h.app.sessions() as db:
        left = (await db.execute(select(InboxUpdate.update_id, InboxUpdate.status)
                                 .order_by(InboxUpdate.update_id))).all()
    assert [u for u, _ in left] == [20_000, 20_001, 20_002, 30_000, 30_001, 40_000]
    assert len(deletes) >= 3  # 2500 rows, at most 1000 a statement
    if server_database():
        return  # the plan below is SQLite's
    async with h.app.sessions() as db:
        plan = " ".join(str(r[-1]) for r in (await db.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM inbox WHERE received_at < '2026-01-01' "
            "AND status = 'done' ORDER BY received_at LIMIT 1000"))).all())
    assert "INDEX ix_inbox_prune (status=? AND received_at<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# --- a real `gridbot run` process --------------------------------------------------------------


class Process:
    def __init__(self, tmp: Path, url: str, database: str) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "GRIDBOT_BOT_TOKEN": TOKEN, "GRIDBOT_API_URL": url,
                    "GRIDBOT_DATABASE_URL": database,
                    "PYTHONPATH": str(ROOT)}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        registry = write_registry(self.tmp / "district.yaml", 1)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--registry", str(registry),
            cwd=self.tmp, env=self.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)

    async def ended(self, timeout: float) -> tuple[int, str]:
        assert self.proc is not None and self.proc.stderr is not None
        err = await asyncio.wait_for(self.proc.stderr.read(), timeout=timeout)
        return await asyncio.wait_for(self.proc.wait(), timeout=5), err.decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


async def _long_polling(server: FakeBotApi) -> None:
    async def waiting() -> bool:
        return any(m == "getupdates" and int(p.get("timeout") or 0) >= 20
                   for m, p in server.calls)

    await wait_for(waiting, 30, "a long poll in progress")


@pytest.mark.slow
async def test_sigterm_during_a_long_poll_stops_within_ten_seconds(
        tmp_path: Path, server: FakeBotApi) -> None:
    server.long_poll_cap = 60  # hold each getUpdates for the whole 25 s, as Telegram does
    bot = Process(tmp_path, await server.start(), await fresh_database(tmp_path, "run.db"))
    await bot.start()
    try:
        await _long_polling(server)
        await asyncio.sleep(0.5)
        assert bot.proc is not None
        began = time.monotonic()
        bot.proc.send_signal(signal.SIGTERM)
        code, err = await bot.ended(timeout=40)
        took = time.monotonic() - began
        assert code == 0, err
        assert took < 10, f"stopped {took:.1f}s after SIGTERM"
        assert "Traceback" not in err
    finally:
        bot.kill()


@pytest.mark.slow
async def test_token_revoked_while_running_ends_with_one_line(
        tmp_path: Path, server: FakeBotApi) -> None:
    bot = Process(tmp_path, await server.start(), await fresh_database(tmp_path, "run.db"))
    await bot.start()
    try:
        await _long_polling(server)
        server.revoked = True
        code, err = await bot.ended(timeout=30)
        assert code == 1
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("gridbot: error:")]
        assert errors == ["gridbot: error: the Bot API refused GRIDBOT_BOT_TOKEN while running "
                          "(revoked? check it with @BotFather)"]
    finally:
        bot.kill()

