"""Delivery that never storms and never stalls, over HTTP against the fake Bot API server.

Unreadable answers that Telegram accepted count as sent; any other surprise is one row's
failed try; a row whose photos went out never counts as sent without its text; chats are
served side by side; what handlers send straight away is paced and never fails the update.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App, build_app
from bot.cases.outbox import enqueue, prune_sent
from bot.cases.registry_edit import apply_registry
from bot.config import Settings
from bot.ops import outbox_admin
from bot.ops.terminal import local_zone
from bot.org.registry import parse_registry
from bot.telegram.delivery import MAX_UNEXPECTED
from bot.telegram.fake import FIXED_DATE, chat_json
from bot.telegram.inbox import Inbox
from bot.telegram.outage import Outage
from storage.models import Case, InboxUpdate, Outbox, ReportPrompt
from tests.e2e import TOKEN, outbox_rows, outbox_settled, wait_for, write_registry
from tests.fakeserver import FakeBotApi, error, html_page
from tests.harness import BUILDING_CHAT, LEADER, RESIDENT, Harness, fresh_database

GROUP = -1_000_000_000_777
LEADER_CHAT = 10_000  # grid 0's leader in the generated district
APOLOGY = "抱歉"


class Live:
    """The real app (HTTP session, inbox, paced sender) against a fake Bot API server."""

    def __init__(self, app: App, server: FakeBotApi) -> None:
        self.app, self.server = app, server
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, *, inbox: bool = False) -> None:
        loops = [self.app.delivery.run(self.stop, tick=0.2)]
        if inbox:
            reader = Inbox(self.app.bot, self.app.dp, self.app.sessions,
                           self.app.ctx.clock.now, concurrency=1)
            loops += [reader.poll(self.stop, self.app.dp.resolve_used_update_types()),
                      reader.process(self.stop)]
        self.tasks = [asyncio.create_task(loop) for loop in loops]

    async def put(self, key: str, chat: int, text: str, **kwargs: Any) -> None:
        async with self.app.sessions() as db:
            await enqueue(db, key, chat, text, self.app.ctx.clock.now(), **kwargs)
            await db.commit()
        self.app.delivery.wake()

    async def close(self) -> None:
        self.stop.set()
        self.app.delivery.wake()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.app.close()
        await self.server.stop()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    server = FakeBotApi()
    url = await server.start()
    settings = Settings(database_url=await fresh_database(tmp_path, "trust.db"),
                        api_url=url, bot_token=SecretStr(TOKEN),
                        _env_file=None)  # type: ignore[call-arg]
    app = await build_app(settings)
    registry = write_registry(tmp_path / "district.yaml", 2)
    async with app.sessions() as db:
        await apply_registry(db, parse_registry(registry.read_text("utf-8")), app.ctx.clock)
    await app.identify()
    running = Live(app, server)
    yield running
    await running.close()


async def settled(live: Live, seconds: float = 20) -> None:
    await wait_for(lambda: outbox_settled(live.app), seconds, "the outbox to settle")


async def quiet(live: Live, seconds: float = 1.0) -> None:
    """Let the sender run a few more ticks: anything it would send again shows up now."""
    await asyncio.sleep(seconds)


def private_message(user: int, text: str, message_id: int) -> dict[str, Any]:
    entities = ([{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
                if text.startswith("/") else [])
    return {"message": {
        "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(user),
        "from": {"id": user, "is_bot": False, "first_name": f"u{user}"},
        "text": text, "entities": entities}}


def once(method: str, chat: int, answer: Callable[[], web.StreamResponse]
         ) -> Callable[[str, int, dict[str, Any]], web.StreamResponse | None]:
    """A rule answering the first matching send with `answer`, then letting sends through."""
    used: list[bool] = []

    def rule(m: str, c: int, _params: dict[str, Any]) -> web.StreamResponse | None:
        if m == method and c == chat and not used:
            used.append(True)
            return answer()
        return None
    return rule


# --- accepted but unreadable ---------------------------------------------------------------

async def test_unreadable_answers_to_every_send_deliver_each_message_once(live: Live) -> None:
    live.server.unreadable_every = 1
    live.start()
    await live.put("text", 701, "一条文字")
    await live.put("photo", 702, "带照片", photos=["p1"])
    await live.put("album", 703, "相册" * 700, photos=["a1", "a2", "a3"])
    await live.put("buttons", GROUP, "卡片", buttons=[[{"text": "受理",
                                                       "callback_data": "c1:ac:1:1"}]])
    await settled(live)
    await quiet(live, 1.5)
    received = Counter((r.chat_id, r.text, tuple(r.photos)) for r in live.server.received)
    assert received and set(received.values()) == {1}, received
    assert len(live.server.received) == 1 + 1 + (3 + 1) + 1
    rows = {r.dedupe_key: r for r in await outbox_rows(live.app)}
    assert all(r.status == "sent" for r in rows.values())
    # The id comes from the raw answer: the text of the album card, the buttons of the card.
    assert rows["buttons"].sent_message_id == live.server.to(GROUP)[-1].message_id
    assert rows["album"].sent_message_id == live.server.to(703)[-1].message_id


async def test_one_unreadable_answer_in_six_makes_no_duplicate(live: Live) -> None:
    live.server.unreadable_every = 6
    live.start()
    for n in range(24):
        await live.put(f"m{n}", 800 + n % 8, f"消息 {n}")
    await settled(live)
    await quiet(live, 1.0)
    assert live.server.injected["unreadable"] >= 4
    texts = Counter(r.text for r in live.server.received)
    assert texts == Counter(f"消息 {n}" for n in range(24))
    assert all(r.status == "sent" for r in await outbox_rows(live.app))


# --- any other unexpected answer -----------------------------------------------------------

async def test_unexpected_answers_hold_back_only_their_own_chat(live: Live) -> None:
    proxy_down, gone, too_large = 901, 902, 903

    def broken(method: str, chat: int, _params: dict[str, Any]) -> web.StreamResponse | None:
        if chat == proxy_down:
            return html_page(502)
        if chat == gone:
            return error(404, "Not Found")
        if chat == too_large:
            return error(413, "Request Entity Too Large")
        return None

    live.server.rules.append(broken)
    for chat in (proxy_down, gone, too_large):
        await live.put(f"stuck:{chat}", chat, "发不出去")
    for n in range(3):
        for chat in (904, 905, GROUP):
            await live.put(f"ok:{chat}:{n}", chat, f"第{n}条")
    live.start()
    await wait_for(lambda: _others_done(live), 15, "the other chats")
    for chat in (904, 905, GROUP):
        assert [r.text for r in live.server.to(chat)] == ["第0条", "第1条", "第2条"]
    rows = {r.dedupe_key: r for r in await outbox_rows(live.app)}
    # 413 can never succeed: failed at once, with its reason.
    assert rows[f"stuck:{too_large}"].status == "failed"
    assert "413" in (rows[f"stuck:{too_large}"].last_error or "")
    # An HTML page and a 404: a failed try of that row, retried later with backoff.
    for chat, reason in ((proxy_down, "unreadable answer"), (gone, "Not Found")):
        row = rows[f"stuck:{chat}"]
        assert row.status == "pending" and row.retry_at is not None, chat
        assert reason in (row.last_error or "")
        assert row.attempts < 3  # not resent every tick
    async with live.app.sessions() as db:
        listed = await outbox_admin.listing(db, status="failed")
        zone = await local_zone(db)
    assert [r.chat_id for r in listed.rows] == [too_large]
    assert "413" in outbox_admin.render(listed, zone)


async def _others_done(live: Live) -> bool:
    return all(len(live.server.to(c)) == 3 for c in (904, 905, GROUP))


async def test_a_row_that_keeps_failing_strangely_ends_failed(h: Harness) -> None:
    for _ in range(MAX_UNEXPECTED):
        h.api.fail_next(LEADER, 404, "Not Found")
    async with h.app.sessions() as db:
        await enqueue(db, "doomed", LEADER, "总是404", h.clock.now())
        await enqueue(db, "other", RESIDENT, "别的聊天", h.clock.now())
        await db.commit()
    for _ in range(MAX_UNEXPECTED):
        await h.deliver()
        h.clock.advance(timedelta(hours=1))
    await h.deliver()
    async with h.app.sessions() as db:
        row = await db.scalar(select(Outbox).where(Outbox.dedupe_key == "doomed"))
    assert row is not None and row.status == "failed" and row.attempts == MAX_UNEXPECTED
    assert "Not Found" in (row.last_error or "")
    assert h.texts(LEADER) == [] and h.texts(RESIDENT) == ["别的聊天"]


# --- partly sent ---------------------------------------------------------------------------

async def test_photos_sent_then_text_refused_sends_the_text_without_buttons(
        live: Live) -> None:
    def no_buttons(method: str, chat: int, params: dict[str, Any]) -> web.StreamResponse | None:
        if method == "sendmessage" and params.get("reply_markup"):
            return error(400, "Bad Request: BUTTON_DATA_INVALID")
        return None

    live.server.rules.append(no_buttons)
    live.start()
    await live.put("card", LEADER_CHAT, "有两张照片的卡片",
                   photos=["p1", "p2"], buttons=[[{"text": "受理", "callback_data": "x"}]])
    await settled(live)
    await quiet(live, 0.5)
    got = live.server.to(LEADER_CHAT)
    assert [r.photos for r in got] == [["p1"], ["p2"], []]  # photos once, then the text
    assert got[-1].text == "有两张照片的卡片" and got[-1].buttons == []
    (row,) = await outbox_rows(live.app)
    assert row.status == "sent" and row.buttons == [] and "BUTTON_DATA_INVALID" in (
        row.last_error or "")


async def test_photos_sent_then_text_refused_for_good_is_never_marked_sent(
        live: Live) -> None:
    live.server.rules.append(lambda m, c, _p: error(400, "Bad Request: message is too long")
                             if m == "sendmessage" else None)
    live.start()
    await live.put("card", LEADER_CHAT, "文字发不出去", photos=["p1", "p2"])
    await wait_for(lambda: _status_is(live, "failed"), 10, "the row to fail")
    await quiet(live, 0.5)
    assert [r.photos for r in live.server.to(LEADER_CHAT)] == [["p1"], ["p2"]]
    (row,) = await outbox_rows(live.app)
    assert row.status == "failed" and row.sent_at is None



async def _status_is(live: Live, status: str) -> bool:
    return all(r.status == status for r in await outbox_rows(live.app))


# --- several chats at once -----------------------------------------------------------------

async def test_twenty_two_part_cards_to_twenty_people_go_out_side_by_side(
        live: Live) -> None:
    live.server.enforce_limits = True
    for n in range(20):
        # A caption over 1024 characters: the photo, then the text, two calls a card.
        await live.put(f"card{n}", 3000 + n, f"{n}号" + "说明" * 600, photos=[f"p{n}"])
    live.start()
    await settled(live, 30)
    got = live.server.received
    assert len(got) == 40 and live.server.limit_violations == []
    span = max(r.at for r in got) - min(r.at for r in got)
    assert span < 6, span  # the limits allow about 2 s; one chat after another took 21 s
    for n in range(20):
        assert [bool(r.photos) for r in live.server.to(3000 + n)] == [True, False]


async def test_a_private_card_does_not_wait_behind_600_rows_for_a_group(live: Live) -> None:
    live.server.enforce_limits = True
    async with live.app.sessions() as db:
        now = live.app.ctx.clock.now()
        for n in range(600):
            await enqueue(db, f"g{n}", GROUP, f"群消息 {n}", now)
        await enqueue(db, "private", 4242, "私信卡片", now)
        await db.commit()
    live.start()
    await wait_for(lambda: _arrived(live, 4242), 5, "the private card")
    assert live.server.limit_violations == []
    group = [r.text for r in live.server.to(GROUP)]
    assert group == [f"群消息 {n}" for n in range(len(group))]  # in order, within limits


async def _arrived(live: Live, chat: int) -> bool:
    return bool(live.server.to(chat))


# --- direct answers ------------------------------------------------------------------------

async def test_a_burst_of_seven_messages_gets_its_answers_paced(live: Live) -> None:
    live.server.enforce_limits = True
    user = 5_550_123
    for n in range(7):
        live.server.push(private_message(user, "/help", 10 + n))
    live.start(inbox=True)
    await wait_for(lambda: _count_to(live, user, 7), 20, "seven answers")
    await quiet(live, 1.0)
    times = [r.at for r in live.server.to(user)]
    assert len(times) == 7 and live.server.limit_violations == []
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.95
    assert not any(APOLOGY in r.text for r in live.server.received)


async def _count_to(live: Live, chat: int, n: int) -> bool:
    return len(live.server.to(chat)) >= n


@pytest.mark.parametrize("fault", ["429", "502", "unreadable"])
async def test_a_direct_answer_hit_by_a_fault_arrives_once_without_apology(
        live: Live, fault: str) -> None:
    user = 5_550_321
    if fault == "429":
        live.server.rules.append(once("sendmessage", user, lambda: error(
            429, "Too Many Requests: retry after 1", retry_after=1)))
    elif fault == "502":
        live.server.rules.append(once("sendmessage", user, lambda: html_page(502)))
    else:
        live.server.unreadable_every = 1
    live.server.push(private_message(user, "/help", 1))
    live.start(inbox=True)
    await wait_for(lambda: _count_to(live, user, 1), 15, "the answer")
    await quiet(live, 2.5)
    answers = live.server.to(user)
    assert len(answers) == 1, [a.text for a in answers]
    assert APOLOGY not in answers[0].text
    assert all(r.status == "sent" for r in await outbox_rows(live.app))
    # The update is handled, not failed (which would answer again when it is re-run).
    async with live.app.sessions() as db:
        assert set((await db.scalars(select(InboxUpdate.status))).all()) == {"done"}


async def test_a_queued_report_prompt_still_takes_replies_as_reports(h: Harness) -> None:
    h.api.fail_next(BUILDING_CHAT, 502, "Bad Gateway")
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    prompt = h.last(BUILDING_CHAT)
    assert APOLOGY not in prompt.text and len(h.texts(BUILDING_CHAT)) == 1
    async with h.app.sessions() as db:
        stored = (await db.scalars(select(ReportPrompt.message_id))).all()
    assert stored == [prompt.message_id]  # the stand-in id became the real one
    reply = h.updates.bot_message(prompt)
    await h.say(BUILDING_CHAT, RESIDENT, "楼道灯坏了", reply_to=reply)
    async with h.app.sessions() as db:
        cases = (await db.scalars(select(Case))).all()
    assert len(cases) == 1


# --- the loop survives the database --------------------------------------------------------

async def test_delivery_loop_outlives_a_database_outage_and_logs_it_once(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    delivery = live.app.delivery
    delivery.outage = Outage(logging.getLogger("bot.telegram.delivery"), "outbox delivery",
                             base=0.05)
    real = delivery.due_chats
    failures = {"left": 6}

    async def flaky(*args: Any, **kwargs: Any) -> list[int]:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return await real(*args, **kwargs)

    delivery.due_chats = flaky  # type: ignore[method-assign]
    await live.put("after", 6060, "恢复后发出")
    with caplog.at_level(logging.INFO, logger="bot.telegram.delivery"):
        live.start()
        await wait_for(lambda: _arrived(live, 6060), 10, "delivery after the outage")
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.telegram.delivery"]
    assert sum("retrying with backoff" in line for line in lines) == 1, lines
    assert sum("recovered" in line for line in lines) == 1, lines
    assert not any(t.done() for t in live.tasks)  # the loop goes on


# --- retention -----------------------------------------------------------------------------

async def test_sent_rows_are_deleted_after_the_retention_period(h: Harness) -> None:
    assert h.app.settings.outbox_retention_days == 90
    start = h.clock.now()
    async with h.app.sessions() as db:
        for n in range(5):
            row_id = await enqueue(db, f"old{n}", 1000 + n, "旧消息", start)
            assert row_id is not None
            await _set_status(db, row_id, ("sent", "superseded", "sent", "failed", "held")[n])
        await db.commit()
    h.clock.advance(timedelta(days=80))
    async with h.app.sessions() as db:
        recent = await enqueue(db, "recent", 2000, "新消息", h.clock.now())
        assert recent is not None
        await _set_status(db, recent, "sent")
        await db.commit()
    h.clock.advance(timedelta(days=11))  # the old rows are 91 days old, the recent one 11
    await h.app.sweep()
    async with h.app.sessions() as db:
        left = {r.dedupe_key: r.status for r in (await db.scalars(select(Outbox))).all()}
    # Only what was sent (or superseded) goes; what an operator may still act on stays.
    assert left == {"old3": "failed", "old4": "held", "recent": "sent"}


async def test_pruning_goes_in_batches(h: Harness) -> None:
    async with h.app.sessions() as db:
        for n in range(7):
            row_id = await enqueue(db, f"s{n}", 1000 + n, "消息", h.clock.now())
            assert row_id is not None
            await _set_status(db, row_id, "sent")
        await db.commit()
    h.clock.advance(timedelta(days=2))
    assert await prune_sent(h.app.sessions, h.clock.now(), 1, batch=3) == 7
    assert await h.outbox_count() == 0


async def _set_status(db: AsyncSession, row_id: int, status: str) -> None:
    await db.execute(update(Outbox).where(Outbox.id == row_id).values(status=status))


def test_retention_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDBOT_OUTBOX_RETENTION_DAYS", "30")
    assert Settings(_env_file=None).outbox_retention_days == 30  # type: ignore[call-arg]

