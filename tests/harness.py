"""The test harness: the real Dispatcher and domain against a fake Bot API and a manual clock.

People in the sample registry (`examples/registry.yaml`) are named by their role here.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import App, build_app
from bot.cases.buttons import Action, CaseButton
from bot.cases.registry_edit import apply_registry
from bot.clock import ManualClock
from bot.config import Settings
from bot.ledger import digest
from bot.org.registry import parse_registry
from bot.telegram.fake import BOT_ID, FakeTelegram, Sent, Updates
from bot.telegram.ratelimit import Limits
from storage.db import make_engine
from storage.models import Base, Case, CaseEvent, Outbox

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "registry.yaml"

# People and chats of the sample registry.
STREET_SUP = 900001
COMMUNITY_SUP = 910001
LEADER = 920001
MEMBER = 920002
HEAD = 930103  # building head of BSY-01-03
HEAD5 = 930105
UNIT_HEAD = 940131
LEADER2 = 920011
WORK_CHAT = -1009200000001
BUILDING_CHAT = -1009200000103
UNIT_CHAT = -1009200001031
BUILDING5_CHAT = -1009200000105
BUILDING12_CHAT = -1009200000212
# Departments (吹哨报到): their contact people, and the police's work chat.
POLICE = 950001
POLICE_CHAT = -1009500000950
MARKET = 950011
PROPERTY = 950021
RESIDENT = 5550001
RESIDENT2 = 5550002
STRANGER = 5559999

# 2026-11-23 10:00 in Shanghai: a Monday morning, outside the quiet hours.
MORNING = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def isolate_env(monkeypatch: Any, folder: Path) -> None:
    """No GRIDBOT_ variables from the outside, and no .env in reach: run from `folder`.

    GRIDBOT_TEST_DATABASE_URL stays: it is the suite's choice of database, not a setting,
    and without it a test would quietly fall back to SQLite on the PostgreSQL run.
    """
    for name in list(os.environ):
        if name.startswith("GRIDBOT_") and name != "GRIDBOT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(folder)


class Harness:
    def __init__(self, app: App, api: FakeTelegram, clock: ManualClock) -> None:
        self.app = app
        self.api = api
        self.clock = clock
        self.updates = Updates()

    # --- driving ---------------------------------------------------------------------------

    async def feed(self, update: dict[str, Any], *, deliver: bool = True) -> None:
        await self.app.dp.feed_raw_update(self.app.bot, update)
        if deliver:
            await self.deliver()

    async def deliver(self) -> int:
        total = 0
        while sent := await self.app.delivery.flush():
            total += sent
        return total

    async def say(self, chat_id: int, user_id: int, text: str | None = None,
                  **kwargs: Any) -> dict[str, Any]:
        update = self.updates.message(chat_id, user_id, text, **kwargs)
        await self.feed(update)
        return update["message"]

    async def private(self, user_id: int, text: str | None = None,
                      **kwargs: Any) -> dict[str, Any]:
        return await self.say(user_id, user_id, text, **kwargs)

    async def press(self, user_id: int, sent: Sent, label: str) -> None:
        """Press the button `label`; on a case card, turn to the page that has it first (更多
        or ← 返回), as the person would. A 更多 refused (they may do nothing) is the answer."""
        if label not in sent.labels and not await self.turn_page(user_id, sent):
            return
        await self.feed(self.updates.callback(user_id, sent.button_data(label), sent))

    async def turn_page(self, user_id: int, sent: Sent) -> bool:
        """Press the card's 更多 or ← 返回, if it has one; False when that press was refused."""
        from aiogram.methods import AnswerCallbackQuery

        turn = next((str(b["callback_data"]) for row in sent.buttons for b in row
                     if (btn := CaseButton.unpack(str(b.get("callback_data", ""))))
                     and btn.action in (Action.MORE, Action.BACK)), None)
        if turn is None:
            return True
        before = len(self.api.calls_of(AnswerCallbackQuery))
        await self.feed(self.updates.callback(user_id, turn, sent))
        return not any(c.show_alert for c in self.api.calls_of(AnswerCallbackQuery)[before:])

    async def data_of(self, user_id: int, sent: Sent, label: str) -> str:
        """The callback data of `label` on a card, turned to its other page by `user_id` if it
        is not on this one: for a test that then forges the press as someone else."""
        if label not in sent.labels:
            await self.turn_page(user_id, sent)
        return sent.button_data(label)

    async def all_labels(self, user_id: int, sent: Sent) -> list[str]:
        """Every action on a card as `user_id` may reach it: its page and, through 更多 (then
        ← 返回), the other one; without the two page buttons."""
        labels = list(sent.labels)
        if await self.turn_page(user_id, sent) and sent.labels != labels:
            labels += sent.labels
            await self.turn_page(user_id, sent)
        pages = {self.app.ctx.texts.plain("btn_more"), self.app.ctx.texts.plain("btn_back")}
        return [label for label in labels if label not in pages]

    async def press_data(self, user_id: int, data: str, sent: Sent | None = None) -> None:
        await self.feed(self.updates.callback(user_id, data, sent, chat_id=user_id))

    async def advance(self, delta: timedelta) -> None:
        """Move the clock, run the sweep and the album tick, and deliver."""
        self.clock.advance(delta)
        await self.app.sweep()
        await self.app.tick()
        await self.deliver()

    # --- looking ---------------------------------------------------------------------------

    def last(self, chat_id: int) -> Sent:
        return self.api.last_to(chat_id)

    def texts(self, chat_id: int) -> list[str]:
        return self.api.texts_to(chat_id)

    def answers(self) -> list[str]:
        from aiogram.methods import AnswerCallbackQuery

        return [c.text or "" for c in self.api.calls_of(AnswerCallbackQuery)]

    def card(self, chat_id: int, case_id: int) -> Sent:
        """The latest message to a chat that carries buttons for case `case_id` (not a
        reminder list, whose buttons only open cards)."""
        opens = f"{Action.OPEN.value}:"
        for sent in reversed(self.api.to(chat_id)):
            if any(f":{case_id}:" in str(b.get("callback_data", ""))
                   and opens not in str(b.get("callback_data", ""))
                   for r in sent.buttons for b in r):
                return sent
        raise AssertionError(f"no card for case #{case_id} in chat {chat_id}")

    def reminder_lists(self, chat_id: int) -> list[Sent]:
        """The gathered reminder lists sent to a chat (bot/cases/reminders.py)."""
        opens = f"c1:{Action.OPEN.value}:"
        return [s for s in self.api.to(chat_id)
                if s.buttons and all(str(b.get("callback_data", "")).startswith(opens)
                                     for r in s.buttons for b in r)]

    def reminded(self, chat_id: int, word: str, case_id: int | None = None) -> int:
        """How many reminder lists to a chat have a line with `word` (and `#case_id`)."""
        def has(text: str) -> bool:
            return any(word in line and (case_id is None or f"#{case_id} " in line)
                       for line in text.splitlines()[1:])
        return sum(1 for s in self.reminder_lists(chat_id) if has(s.text))

    async def open_case(self, user_id: int, case_id: int) -> Sent:
        """Press `#case_id` on the latest reminder list to `user_id`: the card they get."""
        for sent in reversed(self.reminder_lists(user_id)):
            for row in sent.buttons:
                for b in row:
                    found = CaseButton.unpack(str(b.get("callback_data", "")))
                    if found is not None and found.case_id == case_id:
                        await self.press_data(user_id, found.pack(), sent)
                        return self.card(user_id, case_id)
        raise AssertionError(f"no reminder list to {user_id} names case #{case_id}")

    async def case(self, case_id: int) -> Case:
        async with self.app.sessions() as db:
            case = await db.get(Case, case_id)
            assert case is not None
            return case

    async def cases(self) -> list[Case]:
        async with self.app.sessions() as db:
            return list((await db.scalars(select(Case).order_by(Case.id))).all())

    async def events(self, case_id: int) -> list[str]:
        async with self.app.sessions() as db:
            rows = await db.scalars(
                select(CaseEvent.action).where(CaseEvent.case_id == case_id)
                .order_by(CaseEvent.id))
            return list(rows.all())

    async def outbox_count(self, status: str | None = None) -> int:
        async with self.app.sessions() as db:
            q = select(func.count()).select_from(Outbox)
            if status:
                q = q.where(Outbox.status == status)
            return int(await db.scalar(q) or 0)

    async def report_privately(self, user: int, text: str, category: str) -> Case:
        """`/report <text>` in private, pick a category, no photo, no location, submit."""
        await self.private(user, f"/report {text}")
        await self.press(user, self.last(user), category)
        await self.press(user, self.last(user), "跳过")
        await self.private(user, "跳过")
        await self.press(user, self.last(user), "提交")
        return (await self.cases())[-1]

    async def report_in_group(self, text: str = "3单元楼道灯坏了，晚上很黑",
                              user: int = RESIDENT, chat: int = BUILDING_CHAT) -> Case:
        await self.say(chat, user, f"/report {text}")
        return (await self.cases())[-1]


async def empty_database(url: str) -> None:
    """No tables left in the database at `url` (a server database the tests or the
    benchmarks fill from nothing)."""
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        # The revision stamp goes too: left behind, it would vouch for tables a test then
        # makes by hand (an old schema), and the database would pass as up to date.
        await conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    await engine.dispose()


def server_database() -> str | None:
    """The server database the tests run on (GRIDBOT_TEST_DATABASE_URL), if any.

    Under pytest-xdist each worker has a database of its own, named after the worker
    (`gridbot_test_gw0`), so tests running side by side never empty each other's tables.
    """
    url = os.environ.get("GRIDBOT_TEST_DATABASE_URL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(
        hide_password=False)


async def _maintenance(url: str, *statements: str) -> list[Any]:
    """Statements that look up, create or drop databases, run from the server's `postgres`
    database; the first value of each statement that returns rows."""
    engine = create_async_engine(make_url(url).set(database="postgres"),
                                 isolation_level="AUTOCOMMIT")
    values: list[Any] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.exec_driver_sql(statement)
                values.append(result.scalar() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return values


async def ensure_server_database() -> None:
    """Creates this worker's database on the server if it is not there yet."""
    url = server_database()
    if not url or url == os.environ.get("GRIDBOT_TEST_DATABASE_URL"):
        return
    name = make_url(url).database
    [exists] = await _maintenance(url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
    if not exists:
        await _maintenance(url, f'CREATE DATABASE "{name}"')


async def refuse_inserts(h: Harness, table: str) -> None:
    """Makes the database refuse every new row of `table`: a failure inside a handler's
    transaction, the way a full disk or a broken constraint would show up."""
    async with h.app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refused_by_a_test() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by a test'; END $$ LANGUAGE plpgsql")
            await conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refused_by_a_test()")
        else:
            await conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test'); END")


class Snapshot:
    """A database state many tests start from, prepared once: a copy of the SQLite file, or
    on the server a template database (`CREATE DATABASE … TEMPLATE`)."""

    def __init__(self, key: str, folder: Path) -> None:
        self.key = key
        self.folder = folder  # where the harness that prepared it kept its SQLite file

    @classmethod
    async def take(cls, key: str, folder: Path) -> Snapshot:
        """Keeps the state of the database a closed harness in `folder` left behind."""
        url = server_database()
        if url:
            name = make_url(url).database
            await _maintenance(url, f'DROP DATABASE IF EXISTS "{name}_{key}" WITH (FORCE)',
                               f'CREATE DATABASE "{name}_{key}" TEMPLATE "{name}"')
        return cls(key, folder)

    async def restore(self, tmp_path: Path, db_name: str = "t.db") -> None:
        """Puts the kept state where a harness in `tmp_path` will open it."""
        url = server_database()
        if url:
            name = make_url(url).database
            await _maintenance(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                               f'CREATE DATABASE "{name}" TEMPLATE "{name}_{self.key}"')
            return
        src = self.folder / db_name
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{src}{suffix}").exists():
                shutil.copy(f"{src}{suffix}", tmp_path / f"{db_name}{suffix}")


async def fresh_database(tmp_path: Path, name: str) -> str:
    """An empty database for one test: the server database if one is named, else SQLite."""
    url = server_database()
    if url:
        await empty_database(url)
        return url
    return f"sqlite+aiosqlite:///{tmp_path / name}"


# The sample registry loaded into a fresh SQLite file, once per test process: most tests start
# from exactly that, and copying a file is far cheaper than migrating and loading each time.
_loaded_sqlite: Path | None = None


async def _sample_sqlite() -> Path:
    global _loaded_sqlite
    if _loaded_sqlite is None:
        folder = Path(tempfile.mkdtemp(prefix="gridbot-sample-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / "sample.db"
        settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", bot_token=None,
                            _env_file=None)  # type: ignore[call-arg]
        clock = ManualClock(MORNING)
        app = await build_app(settings, clock=clock, session=FakeTelegram(),
                              limits=Limits.unlimited())
        async with app.sessions() as db:
            await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), clock)
        await app.close()
        _loaded_sqlite = path
    return _loaded_sqlite


async def make_harness(tmp_path: Path, *, locale: str = "zh_CN", db_name: str = "t.db",
                       start: datetime = MORNING, load: bool = True,
                       api: FakeTelegram | None = None,
                       clock: ManualClock | None = None, periodic: bool = False) -> Harness:
    url = server_database()
    if url and load:
        await empty_database(url)
    # The registry as loaded at MORNING by the same code, copied: a test that starts at
    # another moment loads it itself, so every row is stamped with its own clock.
    copied = load and not url and start == MORNING and clock is None
    if copied:
        shutil.copyfile(await _sample_sqlite(), tmp_path / db_name)
    settings = Settings(database_url=url or f"sqlite+aiosqlite:///{tmp_path / db_name}",
                        locale=locale, bot_token=None, _env_file=None)  # type: ignore[call-arg]
    api = api or FakeTelegram()
    clock = clock or ManualClock(start)
    app = await build_app(settings, clock=clock, session=api, limits=Limits.unlimited())
    await app.identify()
    assert app.ctx.bot_id == BOT_ID
    # Pacing follows the manual clock too, so a "retry after" is waited out by moving it.
    app.delivery.pacer.clock = lambda: clock.now().timestamp()
    if load and not copied:
        async with app.sessions() as db:
            await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), clock)
    if not periodic:
        # The daily digest and the monthly score only for the tests that ask for them
        # (tests/ledger/test_digest.py): others count the messages people get.
        app.ctx.extra[digest.OFF] = True
    return Harness(app, api, clock)
