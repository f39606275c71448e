"""Several workers on one PostgreSQL (issue 7): nothing is sent, stepped or handled twice.

A second worker is a second engine here (its own connections, so its own claims), or a real
second `gridbot run` process. PostgreSQL only: SQLite has one process.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import PERIODIC
from bot.cases.outbox import enqueue, prune_sent
from bot.cases.sweep import sweep
from bot.ops.workers import alive_within, heartbeat, leave
from bot.telegram import inbox as inbox_module
from bot.telegram.claims import OUTBOX_CHAT, Claims
from bot.telegram.delivery import Delivery
from bot.telegram.fake import Sent, Updates
from bot.telegram.inbox import Inbox, store
from bot.telegram.ratelimit import Limits
from storage.db import make_engine, make_sessionmaker
from storage.models import Case, CaseTimerStep, InboxUpdate, Outbox
from tests.e2e import (
    ReportStream,
    building_chat,
    district,
    report_update,
    resident,
    wait_for,
)
from tests.fakeserver import FakeBotApi
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING12_CHAT,
    BUILDING_CHAT,
    HEAD,
    UNIT_CHAT,
    Harness,
    empty_database,
    server_database,
)
from tests.telegram.test_webhook import free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(server_database() is None,
                                reason="several workers need PostgreSQL "
                                       "(GRIDBOT_TEST_DATABASE_URL)")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def other(h: Harness) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The sessions of a second worker: an engine of its own on the same database."""
    url = server_database()
    assert url is not None
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    await engine.dispose()


# --- the outbox ----------------------------------------------------------------------------

async def test_two_workers_deliver_each_row_once_and_in_order(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    chats = [-500_000 - i for i in range(12)]
    async with h.app.sessions() as db:
        for n in range(6):
            for chat in chats:
                await enqueue(db, f"w:{chat}:{n}", chat, f"{chat}-{n}", h.clock.now())
        await db.commit()
    second = Delivery(h.app.bot, other, h.app.ctx, Limits.unlimited())
    second.pacer.clock = h.app.delivery.pacer.clock
    for _ in range(200):
        moved = await asyncio.gather(h.app.delivery.flush(), second.flush())
        if await h.outbox_count("pending") == 0:
            break
        if not sum(moved):
            await asyncio.sleep(0.05)  # a chat the other worker held is looked at again
    assert await h.outbox_count("pending") == 0
    for chat in chats:
        assert h.texts(chat) == [f"{chat}-{n}" for n in range(6)]


async def test_a_chat_taken_over_is_paced_by_what_the_other_worker_sent(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    """One worker sends a person's first message and lets the chat go (the next must wait a
    second); the other takes the chat at once and must wait out that second too."""
    clock = h.app.delivery.pacer.clock
    first = Delivery(h.app.bot, h.app.sessions, h.app.ctx, Limits())
    second = Delivery(h.app.bot, other, h.app.ctx, Limits())
    first.pacer.clock = second.pacer.clock = clock
    async with h.app.sessions() as db:
        for n in range(2):
            await enqueue(db, f"pace:{n}", HEAD, f"第{n}条", h.clock.now())
        await db.commit()
    assert await first.serve(HEAD, max_pause=0) == 1
    assert await second.serve(HEAD, max_pause=0) == 0  # not within a second of the first
    assert h.texts(HEAD) == ["第0条"]
    h.clock.advance(timedelta(seconds=1.1))
    assert await second.serve(HEAD, max_pause=0) == 1
    assert h.texts(HEAD) == ["第0条", "第1条"]


async def test_each_worker_paces_itself_to_its_share_of_the_overall_limit(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    await h.app.sweep()
    assert h.app.delivery.pacer.workers == 1
    await heartbeat(other, "other-worker", h.clock.now(), alive_within(30))
    await h.app.sweep()
    assert h.app.delivery.pacer.workers == 2
    pacer = h.app.delivery.pacer
    pacer.limits = Limits(per_second=25)
    pacer.sent(-700)
    assert pacer.wait(-800) == pytest.approx(1 / 12)  # half of 25 a second, rounded down
    # The other worker stopped sweeping (it died): after a few sweeps it is not counted.
    h.clock.advance(alive_within(30) + timedelta(seconds=1))
    await h.app.sweep()
    assert h.app.delivery.pacer.workers == 1
    # A worker that stops cleanly leaves at once.
    await heartbeat(other, "third", h.clock.now(), alive_within(30))
    await leave(other, "third")
    await h.app.sweep()
    assert h.app.delivery.pacer.workers == 1


# --- the sweep -----------------------------------------------------------------------------

async def test_two_sweeps_take_each_timer_step_once(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    for n in range(3):
        for chat in (BUILDING_CHAT, BUILDING5_CHAT):
            # 其他: six reports of one problem would ask 是同一问题 instead of making cases.
            await h.report_in_group(f"楼道第{n}处有问题", user=resident(1, n * 10 + abs(chat) % 7),
                                    chat=chat)
    assert len(await h.cases()) == 6
    reported = 0
    for _ in range(40):  # through verification, due soon, overdue, repeats and escalations
        h.clock.advance(timedelta(hours=3))
        taken = await asyncio.gather(*(sweep(s, h.app.ctx, PERIODIC) for s in
                                       (h.app.sessions, other, h.app.sessions, other)))
        reported += sum(taken)
    async with h.app.sessions() as db:
        recorded = int(await db.scalar(select(func.count()).select_from(CaseTimerStep)) or 0)
        escalated = int(await db.scalar(select(func.count()).select_from(CaseTimerStep)
                                        .where(CaseTimerStep.step == "escalate")) or 0)
    assert reported == recorded > 0
    assert escalated >= 6
    await h.deliver()
    assert await h.outbox_count("pending") == 0


async def test_a_sweep_skips_a_case_another_worker_holds(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    case = await h.report_in_group()
    h.clock.advance(timedelta(days=5))
    async with other() as holder:
        await holder.execute(select(Case).where(Case.id == case.id).with_for_update())
        # Not waited for: left to the worker holding it (FOR UPDATE SKIP LOCKED).
        assert await asyncio.wait_for(sweep(h.app.sessions, h.app.ctx, PERIODIC), 10) == 0
        await holder.commit()
    assert await sweep(h.app.sessions, h.app.ctx, PERIODIC) > 0


async def test_pruning_skips_rows_another_worker_is_deleting(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    """Every worker's sweep prunes the inbox and the outbox; one never waits on (or deadlocks
    with) another's batch."""
    now = h.clock.now()
    async with h.app.sessions() as db:
        db.add_all(InboxUpdate(update_id=10_000 + i, payload=None, status="done", attempts=1,
                               received_at=now - timedelta(days=30, minutes=i))
                   for i in range(20))
        db.add(InboxUpdate(update_id=99_999, payload=None, status="done", attempts=1,
                           received_at=now))  # the newest stays, for the polling offset
        db.add_all(Outbox(dedupe_key=f"old:{i}", chat_id=HEAD, text=".", status="sent",
                          not_before=now, created_at=now - timedelta(days=400, minutes=i))
                   for i in range(20))
        await db.commit()
    async with other() as holder:  # the other worker is deleting the oldest ten of each
        await holder.execute(select(InboxUpdate.id).where(InboxUpdate.update_id >= 10_010,
                                                          InboxUpdate.update_id < 20_000)
                             .with_for_update())
        await holder.execute(select(Outbox.id).where(Outbox.dedupe_key.in_(
            [f"old:{i}" for i in range(10, 20)])).with_for_update())
        assert await asyncio.wait_for(inbox_module.prune(h.app.sessions, now), 10) == 10
        assert await asyncio.wait_for(prune_sent(h.app.sessions, now, 90), 10) == 10
        await holder.commit()
    assert await inbox_module.prune(h.app.sessions, now) == 10
    assert await prune_sent(h.app.sessions, now, 90) == 10


# --- stored updates ------------------------------------------------------------------------

async def test_two_processors_handle_each_update_once_in_order_per_chat(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    chats = (BUILDING_CHAT, UNIT_CHAT, BUILDING5_CHAT, BUILDING12_CHAT)
    updates = [h.updates.message(chat, resident(2, n * 10 + i), f"/report 第{n}件 位置{i}")
               for n in range(5) for i, chat in enumerate(chats)]
    await store(h.app.sessions, updates, h.clock.now())
    workers = [Inbox(h.app.bot, h.app.dp, sessions, h.clock.now, concurrency=4)
               for sessions in (h.app.sessions, other, h.app.sessions, other)]
    for _ in range(50):
        await asyncio.gather(*(w.process_pending() for w in workers))
        async with h.app.sessions() as db:
            left = await db.scalar(select(func.count()).select_from(InboxUpdate)
                                   .where(InboxUpdate.status == "new"))
        if not left:
            break
        await asyncio.sleep(0.05)
    async with h.app.sessions() as db:
        statuses = Counter((await db.scalars(select(InboxUpdate.status))).all())
        attempts = set((await db.scalars(select(InboxUpdate.attempts))).all())
    assert statuses == {"done": len(updates)} and attempts == {1}
    cases = await h.cases()
    assert Counter(c.description for c in cases) == Counter(
        f"第{n}件 位置{i}" for n in range(5) for i in range(len(chats)))
    for i, chat in enumerate(chats):
        filed = [c.description for c in cases if c.source_chat_id == chat]
        assert filed == [f"第{n}件 位置{i}" for n in range(5)]  # in the chat's order
    await h.deliver()
    acks = [t for chat in chats for t in h.texts(chat) if "已收到您的诉求" in t]
    assert len(acks) == len(updates)


# --- polling -------------------------------------------------------------------------------

class TokenServer(FakeBotApi):
    """The fake Bot API, noting which worker (told apart by its token) made each call."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.callers: list[tuple[str, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.callers.append((request.match_info["token"], request.match_info["method"].lower()))
        return await super()._handle(request)

    def who(self, method: str) -> set[str]:
        return {token[-1] for token, m in self.callers if m == method}


TOKEN_A = "123456:TEST-token-of-worker-A"
TOKEN_B = "123456:TEST-token-of-worker-B"


async def test_one_worker_polls_and_another_takes_over_when_it_stops(
        h: Harness, other: async_sessionmaker[AsyncSession],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_module, "POLL_CLAIM_RETRY", 0.2)
    server = TokenServer(long_poll_cap=0.3)
    url = await server.start()
    bots = [Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(url)))
            for token in (TOKEN_A, TOKEN_B)]
    allowed = h.app.dp.resolve_used_update_types()
    first = Inbox(bots[0], h.app.dp, h.app.sessions, h.clock.now)
    second = Inbox(bots[1], h.app.dp, other, h.clock.now)
    stops = [asyncio.Event(), asyncio.Event()]

    async def stored() -> int:
        async with h.app.sessions() as db:
            return int(await db.scalar(select(func.count(InboxUpdate.update_id.distinct())))
                       or 0)

    try:
        polling_a = asyncio.create_task(first.poll(stops[0], allowed))
        await wait_for(lambda: _true(server.who("getupdates") == {"A"}), 10, "A to poll")
        polling_b = asyncio.create_task(second.poll(stops[1], allowed))
        for n in range(5):
            server.push(report_update(BUILDING_CHAT, resident(3, n), f"事{n}", 100 + n))
        await wait_for(lambda: _equals(stored(), 5), 10, "five updates stored")
        await asyncio.sleep(1.0)  # B asked several times meanwhile, and did not poll
        assert server.who("getupdates") == {"A"}
        stops[0].set()
        await polling_a
        for n in range(5, 8):
            server.push(report_update(BUILDING_CHAT, resident(3, n), f"事{n}", 100 + n))
        await wait_for(lambda: _equals(stored(), 8), 10, "B to take over")
        assert server.who("getupdates") == {"A", "B"}
        async with h.app.sessions() as db:
            rows = int(await db.scalar(select(func.count()).select_from(InboxUpdate)) or 0)
        assert rows == 8 and server.unconfirmed == 0
    finally:
        for stop in stops:
            stop.set()
        await asyncio.sleep(0)
        for bot in bots:
            await bot.session.close()
        await server.stop()
    await polling_b


async def _true(value: bool) -> bool:
    return value


async def _equals(count: Any, expected: int) -> bool:
    return bool(await count == expected)


# --- claims ------------------------------------------------------------------------------

async def test_a_claim_is_lost_with_its_connection_and_taken_over(
        h: Harness, other: async_sessionmaker[AsyncSession]) -> None:
    mine, theirs = Claims.of(h.app.sessions), Claims.of(other)
    claim = await mine.take(OUTBOX_CHAT, -42)
    assert claim is not None and claim.valid
    assert await mine.take(OUTBOX_CHAT, -42) is None  # not twice within one worker either
    assert await theirs.take(OUTBOX_CHAT, -42) is None
    # The worker's claims connection goes away (the worker died, or the network did).
    async with other() as db:
        # Only this database's: another pytest-xdist worker's claims are on the same server.
        await db.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks "
                              "WHERE locktype = 'advisory' AND granted AND database = "
                              "(SELECT oid FROM pg_database WHERE datname = current_database())"))
        await db.commit()
    assert not await mine.check() and not claim.valid
    taken = await theirs.take(OUTBOX_CHAT, -42)
    assert taken is not None
    await mine.release(claim)  # lost already: releasing it frees nothing of theirs
    assert await mine.take(OUTBOX_CHAT, -42) is None
    await theirs.release(taken)
    again = await mine.take(OUTBOX_CHAT, -42)
    assert again is not None
    await mine.release(again)


# --- two real processes --------------------------------------------------------------------

GRIDS = 8


def fast_district(path: Path) -> Path:
    """The e2e district with timers of seconds: every case is reminded, verified late,
    overdue and escalated twice within half a minute."""
    registry = district(GRIDS)
    registry["policy"] = {"verify_within": "2s", "remind_at": 0.5, "overdue_repeat": None,
                          "escalate_after": "3s", "rating_within": "3d", "quiet_hours": None}
    registry["categories"][0]["sla"] = "5s"
    path.write_text(yaml.safe_dump(registry, allow_unicode=True), encoding="utf-8")
    return path


class Worker:
    """One `gridbot run` process on the shared PostgreSQL."""

    def __init__(self, tmp: Path, name: str, url: str, token: str) -> None:
        self.log = tmp / f"worker-{name}.log"
        self.tmp = tmp
        self.env = {**os.environ, "GRIDBOT_BOT_TOKEN": token, "GRIDBOT_API_URL": url,
                    "GRIDBOT_DATABASE_URL": server_database() or "",
                    "GRIDBOT_SWEEP_SECONDS": "0.5", "PYTHONPATH": str(ROOT)}
        self.proc: asyncio.subprocess.Process | None = None
        self.command = "run"

    async def start(self, registry: Path | None = None) -> None:
        extra = ["--registry", str(registry)] if registry is not None else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", self.command, *extra, cwd=self.tmp, env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.log, "ab"))  # noqa: SIM115 - closed with the process

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=30)


async def _at_least(shared: Shared, sql: str, n: int) -> bool:
    return await shared.scalar(sql) >= n


class Shared:
    """What the two-process tests read from the shared database and check at the end."""

    def __init__(self, url: str, server: TokenServer) -> None:
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.server = server

    async def scalar(self, sql: str) -> int:
        async with self.sessions() as db:
            return int((await db.execute(text(sql))).scalar() or 0)

    async def settled(self, expected: int) -> bool:
        """Every case escalated twice, nothing left to send or to handle."""
        escalated = await self.scalar("SELECT count(DISTINCT case_id) FROM case_timer_steps "
                                      "WHERE step = 'escalate' AND n = 2")
        pending = await self.scalar("SELECT count(*) FROM outbox WHERE status = 'pending'")
        unhandled = await self.scalar("SELECT count(*) FROM inbox WHERE status = 'new'")
        return (escalated == expected and pending == 0 and unhandled == 0
                and self.server.unconfirmed == 0)

    async def each_once(self, expected: int) -> Counter[str]:
        """One case per report, each timer step once, every owed message sent exactly once
        and by both workers; returns the cases' descriptions."""
        async with self.sessions() as db:
            descriptions = Counter((await db.scalars(select(Case.description))).all())
            rows = (await db.execute(select(Outbox.chat_id, Outbox.text, Outbox.status,
                                            Outbox.kind))).all()
            steps = (await db.execute(text(
                "SELECT case_id, round, step, n, count(*) FROM case_timer_steps "
                "GROUP BY case_id, round, step, n HAVING count(*) > 1"))).all()
        assert len(descriptions) == expected and set(descriptions.values()) == {1}
        assert not steps
        # Sent, or a reminder list whose cases moved on (escalated) before its turn (issue 21).
        assert rows and {status for _, _, status, _ in rows} <= {"sent", "dropped"}
        assert {kind for _, _, status, kind in rows if status == "dropped"} <= {"reminders"}
        owed = Counter((chat, body) for chat, body, status, _ in rows if status == "sent")
        received = Counter((r.chat_id, r.text) for r in self.server.received if r.text)
        doubled = {key: (n, received[key]) for key, n in owed.items() if received[key] != n}
        assert not doubled, list(doubled.items())[:3]
        senders = {token[-1] for token, m in self.server.callers if m.startswith("send")}
        assert senders == {"A", "B"}
        return descriptions


async def test_two_worker_processes_send_each_message_once(tmp_path: Path) -> None:
    url = server_database()
    assert url is not None
    await empty_database(url)
    server = TokenServer(long_poll_cap=1.0)
    api = await server.start()
    shared = Shared(url, server)
    a = Worker(tmp_path, "A", api, TOKEN_A)
    b = Worker(tmp_path, "B", api, TOKEN_B)
    stream = ReportStream(server, GRIDS)

    try:
        await a.start(fast_district(tmp_path / "district.yaml"))
        await wait_for(lambda: _true("A" in server.who("getupdates")), 60, "A to poll")
        await b.start()
        await wait_for(lambda: _true("B" in server.who("getme")), 60, "B to start")
        for _ in range(3):
            stream.push_reports(4)
            stream.push_album()
            await asyncio.sleep(1.0)
        # The poller stops (a deploy, a crash): the other worker takes over polling.
        assert await a.stop() == 0
        stream.push_reports(3)
        stream.push_album()
        await wait_for(lambda: shared.settled(stream.cases), 120,
                       "every case escalated twice and every message sent")
        await a.start()  # back again, it waits for B's polling claim and works beside it
        # Up and sweeping (its heartbeat row beside B's) before it is asked to stop: a
        # SIGTERM in the middle of its start-up, on a loaded machine, is not what is tested.
        await wait_for(lambda: _at_least(shared, "SELECT count(*) FROM workers", 2), 60,
                       "A to sweep again")
        stream.push_reports(3)
        await wait_for(lambda: shared.settled(stream.cases), 90,
                       "the last reports handled by both workers")
        assert await b.stop() == 0 and await a.stop() == 0

        # Each report made one case, each album one case with its three photos; every owed
        # message reached its chat exactly once, whichever worker sent it.
        await shared.each_once(stream.cases)
        assert await shared.scalar("SELECT count(*) FROM case_photos") == 3 * stream.albums
        acks = [r for r in server.received if "已收到您的诉求" in r.text]
        assert len(acks) == stream.cases
    finally:
        for worker in (a, b):
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGKILL)
                await worker.proc.wait()
        await server.stop()
        await shared.engine.dispose()


# --- two real webhook workers behind one URL -------------------------------------------------

SECRET = "two-workers-secret"


class HookWorker(Worker):
    """One `gridbot webhook` process; the test plays the load balancer in front of it."""

    def __init__(self, tmp: Path, name: str, url: str, token: str) -> None:
        super().__init__(tmp, name, url, token)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env.update({"GRIDBOT_WEBHOOK_URL": "https://bot.example.org/tg",
                         "GRIDBOT_WEBHOOK_SECRET": SECRET,
                         "GRIDBOT_LISTEN": f"127.0.0.1:{self.port}"})
        self.command = "webhook"


async def test_two_webhook_workers_fed_alternately_do_everything_once(tmp_path: Path) -> None:
    """Updates posted to two `gridbot webhook` workers in turn, as a load balancer would: group
    reports, albums whose parts land on both, a private guided report whose steps alternate
    and whose 提交 is tapped twice, the taps reaching both workers at once. Every report is
    one case, every timer step (reminders, red light, escalations) is taken once, every
    message sent once."""
    url = server_database()
    assert url is not None
    await empty_database(url)
    server = TokenServer(enforce_limits=False)
    api = await server.start()
    shared = Shared(url, server)
    workers = [HookWorker(tmp_path, "A", api, TOKEN_A), HookWorker(tmp_path, "B", api, TOKEN_B)]
    updates = Updates()
    posted = itertools.count()
    expected = 0

    try:
        await workers[0].start(fast_district(tmp_path / "district.yaml"))
        await workers[1].start()
        async with aiohttp.ClientSession() as http:
            async def post(update: dict[str, Any], worker: HookWorker | None = None) -> None:
                worker = worker or workers[next(posted) % 2]
                async with http.post(worker.base + "/tg", json=update, headers={
                        "X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
                    assert r.status == 200, await r.text()

            async def up() -> bool:
                for w in workers:
                    assert w.proc is not None and w.proc.returncode is None, w.log.read_text()
                    try:
                        async with http.get(w.base + "/healthz") as r:
                            if r.status != 200:
                                return False
                    except aiohttp.ClientConnectionError:
                        return False
                return True

            await wait_for(up, 60, "both webhook workers healthy")
            for n in range(12):  # group reports, every other one to the other worker
                i = n % GRIDS
                await post(updates.message(building_chat(i), resident(i, n), f"/report 问题{n}"))
                expected += 1
            for a in range(2):  # albums: the parts of one album land on both workers
                chat, user = building_chat(a), resident(9, a)
                for part in range(3):
                    await post(updates.message(chat, user, photo=f"album{a}-p{part}",
                                               caption=f"/report 相册{a}" if part == 0 else None,
                                               media_group_id=f"album{a}"))
                expected += 1

            # A resident's guided report in private, each step taken by the other worker.
            person = resident(7, 1)

            async def prompt(count: int) -> Sent:
                await wait_for(lambda: _true(len(_with_buttons(server, person)) >= count), 20,
                               f"prompt {count} of the guided report")
                return _with_buttons(server, person)[count - 1]

            await post(updates.message(person, person, "/report 路灯不亮"))
            for step, label in enumerate(("测试社区 7号楼", "其他", "跳过"), start=1):
                shown = await prompt(step)
                await post(updates.callback(person, shown.button_data(label), shown))
            await asyncio.sleep(1.0)  # the location question, without buttons to press
            await post(updates.message(person, person, "跳过"))
            # 提交 tapped twice, the two taps reaching both workers at once: one case.
            submit = await prompt(4)
            await asyncio.gather(*(post(updates.callback(person, submit.button_data("提交"),
                                                         submit), w) for w in workers))
            expected += 1
            await wait_for(lambda: _equals(shared.scalar("SELECT count(*) FROM cases"),
                                           expected), 30,
                           "every report filed")

            await wait_for(lambda: shared.settled(expected), 120,
                           "every case escalated twice and every message sent")
        assert [await w.stop() for w in workers] == [0, 0]

        descriptions = await shared.each_once(expected)
        assert descriptions["路灯不亮"] == 1  # the double 提交 made one case
        assert await shared.scalar("SELECT count(*) FROM case_photos") == 6
        assert server.who("getupdates") == set()  # webhook workers never poll
    finally:
        for worker in workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(signal.SIGKILL)
                await worker.proc.wait()
        await server.stop()
        await shared.engine.dispose()


def _with_buttons(server: FakeBotApi, chat: int) -> list[Sent]:
    return [Sent(r.chat_id, r.text, r.buttons, r.photos, r.message_id)
            for r in server.to(chat) if r.buttons]
