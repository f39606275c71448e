"""Delivery through a faulty Bot API over HTTP: nothing lost, nothing doubled, no limit broken.

The bot runs in-process with its real HTTP session, inbox poller, processor and paced outbox
sender, against `tests.fakeserver.FakeBotApi` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.app import App, build_app
from bot.cases.outbox import enqueue
from bot.cases.registry_edit import apply_registry
from bot.config import Settings
from bot.org.registry import parse_registry
from bot.telegram.inbox import Inbox
from storage.models import Case
from tests.e2e import (
    TOKEN,
    building_chat,
    callback_update,
    count_cases,
    head,
    outbox_rows,
    outbox_settled,
    report_update,
    resident,
    wait_for,
    work_chat,
    write_registry,
)
from tests.fakeserver import FakeBotApi, Faults
from tests.harness import fresh_database

GRIDS = 20
PER_CHAT = 10


class Running:
    def __init__(self, app: App, server: FakeBotApi) -> None:
        self.app, self.server = app, server
        self.stop = asyncio.Event()
        self.inbox = Inbox(app.bot, app.dp, app.sessions, app.ctx.clock.now, concurrency=1)
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.app.identify()
        allowed = self.app.dp.resolve_used_update_types()
        self.tasks = [
            asyncio.create_task(self.inbox.poll(self.stop, allowed)),
            asyncio.create_task(self.inbox.process(self.stop)),
            asyncio.create_task(self.app.delivery.run(self.stop, tick=0.2, also=self.app.tick)),
        ]

    async def close(self) -> None:
        self.stop.set()
        self.app.delivery.wake()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.app.close()


async def running(tmp_path: Path, server: FakeBotApi, grids: int) -> Running:
    url = await server.start()
    settings = Settings(database_url=await fresh_database(tmp_path, "e2e.db"),
                        api_url=url, bot_token=SecretStr(TOKEN), _env_file=None)
    app = await build_app(settings)
    registry = write_registry(tmp_path / "district.yaml", grids)
    async with app.sessions() as db:
        await apply_registry(db, parse_registry(registry.read_text("utf-8")), app.ctx.clock)
    run = Running(app, server)
    await run.start()
    return run


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[Running]:
    server = FakeBotApi(faults=Faults(too_many=0.05, server_error=0.05, slow=0.03, drop=0.05,
                                      retry_after=1, slow_seconds=1.0))
    run = await running(tmp_path, server, GRIDS)
    yield run
    await run.close()
    await server.stop()


@pytest.mark.slow
async def test_200_cases_in_20_chats_through_faults(faulty: Running) -> None:
    app, server = faulty.app, faulty.server
    # Building 0's head never started the bot; grid 1's work chat became a supergroup.
    server.forbidden.add(head(0))
    server.migrate[work_chat(0)] = work_chat(0) - 500
    for n in range(PER_CHAT):
        for i in range(GRIDS):
            server.push(report_update(building_chat(i), resident(i, n), f"第{i}栋问题{n}",
                                      message_id=100 + n))
    await wait_for(lambda: _cases_and_settled(app, GRIDS * PER_CHAT), 240, "200 cases")

    # Every head confirms every case of their building (through their private chat, or
    # for building 0 on the card posted in the work chat).
    async with app.sessions() as db:
        cases = (await db.scalars(select(Case).order_by(Case.id))).all()
    building_of = {building_chat(i): i for i in range(GRIDS)}
    for case in cases:
        assert case.source_chat_id is not None
        i = building_of[case.source_chat_id]
        # Building 0's head presses on the copy in the (migrated) work chat.
        where = work_chat(0) - 500 if i == 0 else head(i)
        server.push(callback_update(head(i), f"c1:vc:{case.id}:{case.rev}", where, 1))
    await wait_for(lambda: _all_open_and_settled(app, GRIDS * PER_CHAT), 240, "all confirmed")

    # No case lost, none doubled.
    assert await count_cases(app) == GRIDS * PER_CHAT
    # Every owed message went out exactly once, to the chat it was meant for.
    rows = await outbox_rows(app)
    assert rows and all(r.status in ("sent", "held") for r in rows)
    held = [r for r in rows if r.status == "held"]
    assert held and all(r.chat_id == head(0) for r in held)
    received = Counter((r.chat_id, r.text) for r in server.received if r.text)
    for row in rows:
        if row.status == "sent":
            assert received[(row.chat_id, row.text)] == 1, row.dedupe_key
    # ... and nothing else reached any chat.
    assert set(received) == {(r.chat_id, r.text) for r in rows if r.status == "sent"}
    # The migrated work chat got its fallback cards at its new id.
    assert not server.to(work_chat(0)) and server.to(work_chat(0) - 500)
    # The server measured no broken rate limit, though it injected every kind of fault.
    assert server.limit_violations == []
    for kind in ("429", "500", "slow", "drop"):
        assert server.injected[kind] > 0, kind


async def _cases_and_settled(app: App, n: int) -> bool:
    return await count_cases(app) == n and await outbox_settled(app)


async def _all_open_and_settled(app: App, n: int) -> bool:
    return await count_cases(app, "open") == n and await outbox_settled(app)


@pytest.mark.slow
async def test_announcement_to_200_groups_hits_no_limit(tmp_path: Path) -> None:
    server = FakeBotApi(enforce_limits=True)
    run = await running(tmp_path, server, 1)
    try:
        app = run.app
        async with app.sessions() as db:
            now = app.ctx.clock.now()
            for g in range(200):
                await enqueue(db, f"notice:{g}", -2_000_000_000_000 - g, f"通知 {g}", now)
            for n in range(10):  # a burst to one group, and to one person
                await enqueue(db, f"burst:{n}", -2_000_000_000_000, f"群消息 {n}", now)
            for n in range(5):
                await enqueue(db, f"private:{n}", 777, f"私信 {n}", now)
            await db.commit()
        app.delivery.wake()
        await wait_for(lambda: outbox_settled(app), 180, "the announcement")
        assert server.limit_violations == []
        assert len([r for r in server.received if r.text.startswith("通知")]) == 200
        burst = [r for r in server.to(-2_000_000_000_000) if r.text.startswith("群消息")]
        assert [r.text for r in burst] == [f"群消息 {n}" for n in range(10)]  # in order
        assert len(server.to(777)) == 5
    finally:
        await run.close()
        await server.stop()
