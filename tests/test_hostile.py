"""Hostile and odd input: every row of the table gets a clear answer or is ignored by design.

Each row is (name, steps, expectation). After every row, whatever it was, the same checks run
on everything the fake Bot API was asked to send and on the database:

- no update failed (the Dispatcher's apology `err_internal` never appears, nothing is logged
  at ERROR);
- every text is one Telegram accepts: 1..4096 characters (UTF-16 units, counted on the HTML
  as sent, which is stricter than Telegram's count after parsing), captions at most 1024,
  callback alerts at most 200, HTML made only of the tags Telegram knows, balanced, with `&`
  only in entities, and something visible left once parsed;
- no case is half-written (each has its report event, a status, and a description or photos)
  and none belongs to a bot (an anonymous admin, a channel, another bot).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from unittest.mock import patch

import pytest
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageCaption,
    EditMessageText,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
)
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.lifecycle import REPORT_LIMIT, REPORT_WINDOW, CaseStatus
from bot.telegram.fake import BOT_ID, FIXED_DATE, Sent, chat_json
from storage.models import Case, CaseEvent, CasePhoto, FsmRecord, Outbox, Person
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    MEMBER,
    RESIDENT,
    RESIDENT2,
    STRANGER,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
)

ANON_ADMIN = 1087968824  # GroupAnonymousBot: a group admin writing as the group
CHANNEL_BOT = 136817688  # Channel_Bot: someone writing as a channel
OTHER_BOT = 6000000042
BOT_IDS = {ANON_ADMIN, CHANNEL_BOT, OTHER_BOT, BOT_ID}
CHANNEL = -1001555000777

INTERNAL = "抱歉，系统出了点问题"
EVIL = '<b>粗</b> & <a href="x">链</a> *md* _i_ `c` [l](http://x) </i> &amp; &#0; <'
EVIL_NAME = '<b>王</b>&<a href="x">'
RLO = "\u202e"
INVISIBLE = " \u200b\u200c\u200d\u2060\ufeff\u3000 \u202e\u2800 "
EMOJI = "🚧🕳️🚶‍♀️💡"

# -- what Telegram accepts ----------------------------------------------------------------

TEXT_LIMIT, CAPTION_LIMIT, ALERT_LIMIT = 4096, 1024, 200
TAGS = {"b", "i", "u", "s", "a", "code", "pre", "blockquote", "tg-spoiler"}
_TOKEN = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-z-]+=\"[^\"<>]*\")*)\s*>"
    r"|&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});"
    r"|[<>&]"
)


def units(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str) -> str:
    """The text a person sees, or AssertionError where Telegram would refuse the markup."""
    stack: list[str] = []
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        where = f"{token!r} at {m.start()} in {text[max(0, m.start() - 40):m.end() + 40]!r}"
        assert token not in ("<", ">", "&"), f"bare {where}"
        if token.startswith("&"):
            out.append(html.unescape(token))
            continue
        closing, tag, attrs = m.group(1), m.group(2).lower(), m.group(3)
        assert tag in TAGS, f"tag Telegram does not know: {where}"
        if closing:
            assert not attrs and stack and stack[-1] == tag, f"unbalanced {where}"
            stack.pop()
        else:
            assert not attrs or (tag == "a" and attrs.strip().startswith("href=")), where
            assert tag != "a" or "href=" in attrs, f"link without href: {where}"
            stack.append(tag)
    out.append(text[pos:])
    assert not stack, f"unclosed {stack} in {text[:200]!r}"
    return "".join(out)


def sendable(text: str | None, *, limit: int, may_be_empty: bool = False) -> str:
    text = text or ""
    assert units(text) <= limit, f"{units(text)} > {limit}: {text[:120]!r}…"
    shown = parse_html(text)
    if not may_be_empty:
        assert shown.strip(), f"nothing visible in {text!r}"
    return shown


def shown_texts(h: Harness) -> list[str]:
    """Every text the bot showed anyone, as people see it; checks each is sendable."""
    shown: list[str] = []
    for call in h.api.calls:
        if isinstance(call, SendMessage | EditMessageText):
            shown.append(sendable(call.text, limit=TEXT_LIMIT))
        elif isinstance(call, SendPhoto | EditMessageCaption):
            shown.append(sendable(call.caption, limit=CAPTION_LIMIT, may_be_empty=True))
        elif isinstance(call, SendMediaGroup):
            for media in call.media:
                shown.append(sendable(getattr(media, "caption", None), limit=CAPTION_LIMIT,
                                      may_be_empty=True))
        elif isinstance(call, AnswerCallbackQuery):
            assert units(call.text or "") <= ALERT_LIMIT, call.text
            shown.append(call.text or "")
        markup = getattr(call, "reply_markup", None)
        for row in getattr(markup, "inline_keyboard", None) or []:
            for b in row:
                assert b.text.strip()
                assert b.callback_data is None or len(b.callback_data.encode()) <= 64
    return shown


async def check_sane(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    await h.deliver()
    shown = shown_texts(h)
    assert not [t for t in shown if INTERNAL in t], "an update failed"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    async with h.app.sessions() as db:
        for case in (await db.scalars(select(Case))).all():
            assert case.status in set(CaseStatus)
            first = await db.scalar(select(CaseEvent.action).where(CaseEvent.case_id == case.id)
                                    .order_by(CaseEvent.id).limit(1))
            assert first in ("report", "report_behalf"), f"case #{case.id} has no report event"
            photos = await db.scalar(select(func.count()).select_from(CasePhoto)
                                     .where(CasePhoto.case_id == case.id))
            assert case.description.strip() or photos, f"case #{case.id} is empty"
            assert case.reporter_id not in BOT_IDS and case.submitted_by_id not in BOT_IDS
        people = set((await db.scalars(select(Person.id))).all())
        assert not people & BOT_IDS, "a bot became a person"
        failed = await db.scalar(select(func.count()).select_from(Outbox)
                                 .where(Outbox.status == "failed"))
        assert not failed


# -- building updates ---------------------------------------------------------------------

MEDIA: dict[str, dict[str, Any]] = {
    "sticker": {"sticker": {"file_id": "stk", "file_unique_id": "ustk", "type": "regular",
                            "width": 512, "height": 512, "is_animated": False,
                            "is_video": False, "emoji": "😀"}},
    "voice": {"voice": {"file_id": "vo", "file_unique_id": "uvo", "duration": 3}},
    "video_note": {"video_note": {"file_id": "vn", "file_unique_id": "uvn", "length": 240,
                                  "duration": 5}},
    "document": {"document": {"file_id": "doc", "file_unique_id": "udoc",
                              "file_name": "<b>照片</b>.jpg", "mime_type": "image/jpeg"},
                 "caption": EVIL},
    "poll": {"poll": {"id": "p1", "question": "<b>去不去</b>?", "options": [
        {"text": "去", "voter_count": 0, "persistent_id": "o1"},
        {"text": "不去", "voter_count": 0, "persistent_id": "o2"}],
        "total_voter_count": 0, "is_closed": False, "is_anonymous": True, "type": "regular",
        "allows_multiple_answers": False, "allows_revoting": False, "members_only": False}},
    "contact": {"contact": {"phone_number": "+8613812345678", "first_name": EVIL_NAME}},
    "dice": {"dice": {"emoji": "🎲", "value": 4}},
    "location": {"location": {"latitude": 31.2, "longitude": 121.4}},
}
GROUP_MEDIA = [k for k in MEDIA if k != "location"]


def bot_from(user_id: int, name: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": True, "first_name": name, "username": f"{name}Bot"}


def as_anon_admin(chat: int) -> dict[str, Any]:
    return {"from": bot_from(ANON_ADMIN, "Group"), "sender_chat": chat_json(chat)}


def as_channel() -> dict[str, Any]:
    return {"from": bot_from(CHANNEL_BOT, "Channel"),
            "sender_chat": {"id": CHANNEL, "type": "channel", "title": EVIL}}


def as_bot() -> dict[str, Any]:
    return {"from": bot_from(OTHER_BOT, "Other")}


def named(name: str) -> dict[str, Any]:
    return {"from": {"id": RESIDENT, "is_bot": False, "first_name": name, "last_name": name}}


FORWARDED = {"forward_origin": {"type": "user", "date": FIXED_DATE, "sender_user": {
    "id": RESIDENT2, "is_bot": False, "first_name": EVIL_NAME}}}
FORWARDED_CHANNEL = {"forward_origin": {"type": "channel", "date": FIXED_DATE, "message_id": 9,
                                        "chat": {"id": CHANNEL, "type": "channel",
                                                 "title": EVIL}}}


def callback(h: Harness, user: int, data: str, *, chat: int | None = None,
             message: str = "normal", name: str = "") -> dict[str, Any]:
    """A button press; `message` is normal, "none" (an inline message) or "old" (inaccessible)."""
    update = h.updates.callback(user, data, chat_id=chat if chat is not None else user,
                                name=name)
    body = update["callback_query"]
    if user in BOT_IDS:
        body["from"]["is_bot"] = True
    if message == "none":
        del body["message"]
        body["inline_message_id"] = "AAAAinline"
    elif message == "old":
        body["message"] = {"chat": chat_json(chat or user), "message_id": 77, "date": 0}
    return update


async def feed_together(h: Harness, *updates: dict[str, Any]) -> None:
    """Updates handled at the same time, as two people pressing at once."""
    await asyncio.gather(*(h.app.dp.feed_raw_update(h.app.bot, u) for u in updates))
    await h.deliver()


# -- helpers for the private flow ---------------------------------------------------------

STAGES = ("building", "category", "description", "photos", "location", "confirm", "done")


def with_button(h: Harness, chat: int, label: str) -> Sent:
    for sent in reversed(h.api.to(chat)):
        if label in sent.labels:
            return sent
    raise AssertionError(f"no message with {label!r} in chat {chat}")


async def _step(h: Harness, user: int, stage: str) -> None:
    if stage == "building":
        await h.press(user, with_button(h, user, "柏树郢社区 3号楼"), "柏树郢社区 3号楼")
    elif stage == "category":
        await h.press(user, with_button(h, user, "环境卫生"), "环境卫生")
    elif stage == "description":
        await h.private(user, "楼下垃圾桶满了三天没人清运")
    elif stage == "photos":
        await h.press(user, with_button(h, user, "下一步"), "下一步")
    elif stage == "location":
        await h.private(user, "跳过")
    elif stage == "confirm":
        await h.press(user, with_button(h, user, "提交"), "提交")


async def flow(h: Harness, user: int, start: str, stop: str) -> None:
    for stage in STAGES[STAGES.index(start):STAGES.index(stop)]:
        await _step(h, user, stage)


async def flow_to(h: Harness, user: int, stage: str) -> None:
    """A new resident's guided report, up to `stage`."""
    await h.private(user, "/start")
    await flow(h, user, "building", stage)


async def state_of(h: Harness, chat: int, user: int) -> str | None:
    async with h.app.sessions() as db:
        rows = (await db.scalars(select(FsmRecord).where(
            FsmRecord.key.like(f"%:{chat}:{user}:%")))).all()
        return next((r.state for r in rows if r.state), None)


# -- expectations -------------------------------------------------------------------------

Check = Callable[[Harness, Any], Awaitable[None]]


def all_of(*checks: Check) -> Check:
    async def run(h: Harness, got: Any) -> None:
        for check in checks:
            await check(h, got)
    return run


def cases(n: int, **fields: Any) -> Check:
    async def run(h: Harness, got: Any) -> None:
        found = await h.cases()
        assert len(found) == n, [(c.id, c.description[:30]) for c in found]
        if fields and found:
            for key, want in fields.items():
                value = getattr(found[-1], key)
                assert (want(value) if callable(want) else value == want), (key, value)
    return run


def last_says(chat: int, *phrases: str) -> Check:
    async def run(h: Harness, got: Any) -> None:
        text = parse_html(h.last(chat).text)
        for phrase in phrases:
            assert phrase in text, (phrase, text)
    return run


def someone_saw(*phrases: str) -> Check:
    """Every phrase appears, literally, in something shown."""
    async def run(h: Harness, got: Any) -> None:
        shown = shown_texts(h)
        for phrase in phrases:
            assert any(phrase in t for t in shown), (phrase, shown[-5:])
    return run


def nobody_saw(*phrases: str) -> Check:
    async def run(h: Harness, got: Any) -> None:
        for phrase in phrases:
            assert not [t for t in shown_texts(h) if phrase in t], phrase
    return run


def answered(*phrases: str) -> Check:
    async def run(h: Harness, got: Any) -> None:
        assert h.answers(), "the button press was not answered"
        for phrase in phrases:
            assert phrase in h.answers()[-1], (phrase, h.answers())
    return run


def silent(chat: int) -> Check:
    async def run(h: Harness, got: Any) -> None:
        assert h.api.to(chat) == [], [s.text for s in h.api.to(chat)]
    return run


def events(*actions: str) -> Check:
    async def run(h: Harness, got: Any) -> None:
        [case] = await h.cases()
        assert await h.events(case.id) == list(actions)
    return run


def no_state(user: int) -> Check:
    async def run(h: Harness, got: Any) -> None:
        assert await state_of(h, user, user) is None
    return run


# -- step builders ------------------------------------------------------------------------

Steps = Callable[[Harness], Awaitable[Any]]


def group(text: str | None = None, chat: int = BUILDING_CHAT, user: int = RESIDENT,
          **kwargs: Any) -> Steps:
    async def run(h: Harness) -> Any:
        return await h.say(chat, user, text, **kwargs)
    return run


def private(text: str | None = None, user: int = RESIDENT, **kwargs: Any) -> Steps:
    async def run(h: Harness) -> Any:
        return await h.private(user, text, **kwargs)
    return run


def mid_flow(stage: str, odd: dict[str, Any] | str) -> Steps:
    """A resident at `stage` of the guided report sends something odd, then carries on."""
    async def run(h: Harness) -> Any:
        await flow_to(h, RESIDENT, stage)
        if isinstance(odd, str):
            await h.private(RESIDENT, odd)
        else:
            await h.private(RESIDENT, extra=odd)
        hint = parse_html(h.last(RESIDENT).text)
        await flow(h, RESIDENT, stage, "done")
        return hint
    return run


def hint_says(*phrases: str) -> Check:
    async def run(h: Harness, got: Any) -> None:
        for phrase in phrases:
            assert phrase in got, (phrase, got)
    return run


HINTS = {
    "building": "请点击上方按钮",
    "category": "请点击上方按钮",
    "description": "请用文字描述",
    "photos": "请发送照片",
    "location": "请点下方按钮",
    "confirm": "请点击上方按钮",
}


async def _reported(h: Harness, text: str = "楼道灯坏了") -> Case:
    return await h.report_in_group(text)


async def _confirmed(h: Harness, text: str = "楼道灯坏了") -> Case:
    case = await h.report_in_group(text)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def _resolved(h: Harness) -> Case:
    case = await _confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已更换灯泡")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    return await h.case(case.id)


def prompt_then(setup: Callable[[Harness], Awaitable[Case]], user: int, button: str,
                *answers: dict[str, Any] | str) -> Steps:
    """Open a prompt with `button` on the user's card, then answer it with `answers`."""
    async def run(h: Harness) -> Any:
        case = await setup(h)
        await h.press(user, h.card(user, case.id), button)
        for answer in answers:
            if isinstance(answer, str):
                await h.private(user, answer)
            else:
                await h.private(user, extra=answer)
        return case
    return run


def case_is(**fields: Any) -> Check:
    async def run(h: Harness, got: Any) -> None:
        case = await h.case(got.id)
        for key, want in fields.items():
            value = getattr(case, key)
            assert (want(value) if callable(want) else value == want), (key, value)
    return run


def button_data(setup: Callable[[Harness], Awaitable[Case]], data: Callable[[Case], str],
                user: int = HEAD, message: str = "normal") -> Steps:
    """A press with callback data made from the case `setup` made."""
    async def run(h: Harness) -> Any:
        case = await setup(h)
        await h.feed(callback(h, user, data(case), message=message))
        return case
    return run


def forged(template: str) -> Callable[[Case], str]:
    def data(case: Case) -> str:
        return template.format(id=case.id, rev=case.rev)
    return data


def flow_button(stage: str, data: str, message: str = "normal") -> Steps:
    async def run(h: Harness) -> Any:
        await flow_to(h, RESIDENT, stage)
        await h.feed(callback(h, RESIDENT, data, message=message))
        return stage
    return run


# -- scenarios that need more than one builder --------------------------------------------


async def edited_report(h: Harness) -> Any:
    msg = await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    edited = {**msg, "text": "/report 楼道灯坏了，改一下", "edit_date": FIXED_DATE + 60}
    await h.feed({"update_id": 900001, "edited_message": edited})
    return msg


async def edited_in_flow(h: Harness) -> Any:
    await flow_to(h, RESIDENT, "description")
    msg = await h.private(RESIDENT, "垃圾桶满了")
    await h.feed({"update_id": 900002,
                  "edited_message": {**msg, "text": "<b>改</b>", "edit_date": FIXED_DATE + 9}})
    await flow(h, RESIDENT, "photos", "done")
    return msg


async def hostile_name_in_fallback(h: Harness) -> Any:
    """The head cannot be written to: the card goes to the work chat with a mention of them,
    they press ❌ there (their Telegram name is hostile too) and answer the prompt."""
    async with h.app.sessions() as db:
        head = await db.get(Person, HEAD)
        assert head is not None
        head.name = EVIL_NAME
        await db.commit()
    h.api.forbid(HEAD)
    case = await h.report_in_group()
    card = h.card(WORK_CHAT, case.id)
    await h.feed(h.updates.callback(HEAD, card.button_data("❌ 不属实"), card, name=EVIL_NAME))
    prompt = h.last(WORK_CHAT)
    await h.say(WORK_CHAT, HEAD, EVIL, name=EVIL_NAME, reply_to=h.updates.bot_message(prompt))
    return case


async def two_staff_accept(h: Harness) -> Any:
    case = await _confirmed(h)
    data = h.card(LEADER, case.id).button_data("受理")
    await feed_together(h, callback(h, LEADER, data), callback(h, MEMBER, data))
    return case


async def head_confirms_twice_at_once(h: Harness) -> Any:
    case = await _reported(h)
    data = h.card(HEAD, case.id).button_data("✅ 属实")
    await feed_together(h, callback(h, HEAD, data), callback(h, HEAD, data))
    return case


async def rate_and_unhappy_at_once(h: Harness) -> Any:
    case = await _resolved(h)
    notice = h.last(RESIDENT)
    await feed_together(h, callback(h, RESIDENT, notice.button_data("满意")),
                        callback(h, RESIDENT, notice.button_data("不满意")))
    return case


async def same_button_before_delivery(h: Harness) -> Any:
    case = await _confirmed(h)
    data = h.card(LEADER, case.id).button_data("受理")
    await h.feed(callback(h, LEADER, data), deliver=False)
    await h.feed(callback(h, LEADER, data), deliver=False)
    await h.deliver()
    return case


async def same_update_twice(h: Harness) -> Any:
    case = await _reported(h)
    update = callback(h, HEAD, h.card(HEAD, case.id).button_data("✅ 属实"))
    await h.feed(update, deliver=False)
    await h.feed(update)
    return case


async def submit_twice(h: Harness) -> Any:
    await flow_to(h, RESIDENT, "confirm")
    data = with_button(h, RESIDENT, "提交").button_data("提交")
    await h.feed(callback(h, RESIDENT, data), deliver=False)
    await h.feed(callback(h, RESIDENT, data))


async def submit_twice_at_once(h: Harness) -> Any:
    await flow_to(h, RESIDENT, "confirm")
    data = with_button(h, RESIDENT, "提交").button_data("提交")
    await feed_together(h, callback(h, RESIDENT, data), callback(h, RESIDENT, data))


async def database_locked(h: Harness) -> Any:
    """SQLite gives up waiting for another writer just as the button's case is claimed."""
    case = await _confirmed(h)
    real = AsyncSession.execute

    async def locked(self: AsyncSession, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(statement, "is_update", False) and "cases" in str(statement):
            raise OperationalError(str(statement), {}, Exception("database is locked"))
        return await real(self, statement, *args, **kwargs)

    with patch.object(AsyncSession, "execute", locked):
        await h.press(LEADER, h.card(LEADER, case.id), "受理")
    return case


async def deleted_case(h: Harness) -> Any:
    case = await _reported(h)
    data = h.card(HEAD, case.id).button_data("✅ 属实")
    async with h.app.sessions() as db:
        for model in (CaseEvent, CasePhoto, Outbox):
            await db.execute(delete(model).where(model.case_id == case.id))
        await db.execute(delete(Case).where(Case.id == case.id))
        await db.commit()
    await h.feed(callback(h, HEAD, data))


def flood(user: int, n: int, chat: int = BUILDING_CHAT) -> Steps:
    async def run(h: Harness) -> Any:
        for i in range(n):
            h.clock.advance(timedelta(seconds=30))
            await h.say(chat, user, f"/report 第{i + 1}件：楼道灯坏了")
    return run


async def flood_then_wait(h: Harness) -> Any:
    await flood(RESIDENT, REPORT_LIMIT + 1)(h)
    assert len(await h.cases()) == REPORT_LIMIT
    h.clock.advance(REPORT_WINDOW)
    await h.say(BUILDING_CHAT, RESIDENT, "/report 过了一阵又坏了")


async def flood_private(h: Harness) -> Any:
    await flood(RESIDENT, REPORT_LIMIT)(h)
    await h.private(RESIDENT, "/report 私聊再报一件")


async def flood_album(h: Harness) -> Any:
    await flood(RESIDENT, REPORT_LIMIT)(h)
    await h.say(BUILDING_CHAT, RESIDENT, photo="a1", caption="/report 外墙脱落",
                media_group_id="g1")
    await h.say(BUILDING_CHAT, RESIDENT, photo="a2", media_group_id="g1")
    await h.advance(timedelta(seconds=5))
    await h.advance(timedelta(seconds=5))


async def anon_reply_to_prompt(h: Harness) -> Any:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    prompt = h.last(BUILDING_CHAT)
    await h.say(BUILDING_CHAT, RESIDENT, "电梯停了", reply_to=h.updates.bot_message(prompt),
                extra=as_anon_admin(BUILDING_CHAT))


async def staff_on_behalf_of_channel(h: Harness) -> Any:
    """A unit head answers `/report` to a message posted as a channel: it is their report."""
    original = h.updates.message(BUILDING_CHAT, RESIDENT2, "楼下有车堵住消防通道",
                                 extra=as_channel())["message"]
    await h.say(BUILDING_CHAT, UNIT_HEAD, "/report", reply_to=original)


def reply_to_prompt(text: str) -> Steps:
    async def run(h: Harness) -> Any:
        await h.say(BUILDING_CHAT, RESIDENT, "/report")
        prompt = h.last(BUILDING_CHAT)
        await h.say(BUILDING_CHAT, RESIDENT, text, reply_to=h.updates.bot_message(prompt))
    return run


async def long_result_submitted(h: Harness) -> Any:
    case = await prompt_then(_confirmed, LEADER, "办结", long_of("<>&"))(h)
    await h.press(LEADER, h.last(LEADER), "提交办结")
    return case


async def flood_then_other(h: Harness) -> Any:
    await flood(RESIDENT, REPORT_LIMIT + 1)(h)
    await h.say(BUILDING_CHAT, RESIDENT2, "/report 我也报一件")


async def reply_sticker_to_prompt(h: Harness) -> Any:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    prompt = h.last(BUILDING_CHAT)
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(prompt),
                extra=MEDIA["sticker"])


def media_in_group(kind: str) -> Steps:
    async def run(h: Harness) -> Any:
        await h.say(BUILDING_CHAT, RESIDENT, extra=MEDIA[kind])
    return run


def start_payload(payload: str) -> Steps:
    async def run(h: Harness) -> Any:
        await h.private(RESIDENT, f"/start {payload}")
        first = parse_html(h.last(RESIDENT).text)
        await flow(h, RESIDENT, "building", "done")
        return first
    return run


def bind(arg: str, user: int = LEADER, chat: int = -100777) -> Steps:
    async def run(h: Harness) -> Any:
        await h.say(chat, user, f"/bind {arg}")
    return run


async def case_detail_huge(h: Harness) -> Any:
    """A case with a long history of long texts, and lists full of markup, asked for."""
    case = await _confirmed(h, "<&>" * 1500)
    for i in range(3):
        await h.press(LEADER, h.card(LEADER, case.id), "办结")
        await h.private(LEADER, f"{i}" + "&<" * 1500)
        await h.press(LEADER, h.last(LEADER), "提交办结")
        await h.press(RESIDENT, h.last(RESIDENT), "不满意")
        await h.private(RESIDENT, f"{i}" + "\"'" * 1000)
    for _ in range(40):  # a long overdue stretch: many reminders in the history
        await h.advance(timedelta(hours=4))
    await h.private(LEADER, f"/case {case.id}")
    await h.private(RESIDENT, f"/case {case.id}")
    await h.private(LEADER, "/cases")
    await h.private(RESIDENT, "/my")
    return case


async def many_cases_listed(h: Harness) -> Any:
    for i in range(25):
        h.clock.advance(timedelta(minutes=3))
        await h.say(BUILDING_CHAT, RESIDENT if i % 2 else RESIDENT2, f"/report {i}" + "<>" * 40)
    await h.private(LEADER, "/cases")
    await h.private(RESIDENT, "/my")
    await h.private(HEAD, "/cases")


def long_of(char: str, n: int = 4096) -> str:
    return (char * n)[:n]


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    steps: Steps
    expect: Check


ASK_AGAIN = "请用文字回复"
PROMPT = "请写明要反映的问题"
POLITE_SELF = "本人"

TABLE: list[Row] = [
    # --- long and empty texts -----------------------------------------------------------
    Row("group report of 4096 chars", group("/report " + long_of("楼")),
        cases(1, description=lambda d: 0 < len(d) <= 2000)),
    Row("group report of 4096 markup chars", group("/report " + long_of("<&>\"'")),
        all_of(cases(1), someone_saw("<&>\"'<&>"))),
    Row("group report of 4096 emoji", group("/report " + long_of("🚧", 2048)), cases(1)),
    Row("group report followed by 5000 chars", group("/report " + long_of("灯坏了", 5000)),
        cases(1)),
    Row("group report of spaces only", group("/report " + " " * 300),
        all_of(cases(0), last_says(BUILDING_CHAT, PROMPT))),
    Row("group report of invisible chars", group("/report " + INVISIBLE),
        all_of(cases(0), last_says(BUILDING_CHAT, PROMPT))),
    Row("group photo with invisible caption", group(photo="ph", caption="/report" + INVISIBLE),
        cases(1, description="")),
    Row("sticker in reply to the prompt",
        reply_sticker_to_prompt, all_of(cases(0), last_says(BUILDING_CHAT, PROMPT))),
    Row("invisible reply to the prompt",
        reply_to_prompt(INVISIBLE), all_of(cases(0), last_says(BUILDING_CHAT, PROMPT))),
    Row("reply of 4096 chars to the prompt",
        reply_to_prompt(long_of("&")), cases(1, description=lambda d: d.startswith("&&&"))),
    Row("private /report with invisible args", mid_flow("category", "/report" + INVISIBLE),
        all_of(cases(1, description="楼下垃圾桶满了三天没人清运"))),
    Row("private description of 4096 chars", mid_flow("description", long_of("<b>&")),
        all_of(cases(1), someone_saw("<b>&<b>&"))),
    Row("private description of spaces", mid_flow("description", " " * 4096),
        all_of(hint_says("请用文字描述"), cases(1))),
    Row("private description of invisible chars", mid_flow("description", INVISIBLE),
        all_of(hint_says("请用文字描述"), cases(1))),
    Row("reject reason of 4096 chars",
        prompt_then(_reported, HEAD, "❌ 不属实", long_of("<&\"")),
        all_of(case_is(status="rejected", reject_reason=lambda r: 0 < len(r) <= 500),
               last_says(RESIDENT, "<&\""))),
    Row("reject reason invisible, then real",
        prompt_then(_reported, HEAD, "❌ 不属实", INVISIBLE, " ", "灯是好的"),
        all_of(case_is(status="rejected", reject_reason="灯是好的"),
               someone_saw(ASK_AGAIN))),
    Row("escalate reason of 4096 chars",
        prompt_then(_confirmed, LEADER, "上报", long_of("&")),
        case_is(level="community")),
    Row("result of 4096 chars, previewed",
        prompt_then(_confirmed, LEADER, "办结", long_of("<>&")),
        all_of(case_is(status="open", result=None), last_says(LEADER, "<>&<>&", "提交办结"))),
    Row("result of 4096 chars, submitted", long_result_submitted,
        all_of(case_is(status="resolved", result=lambda r: r.startswith("<>&")),
               last_says(RESIDENT, "<>&<>&"), last_says(BUILDING_CHAT, "<>&<>&"))),
    Row("result invisible, then real",
        prompt_then(_confirmed, LEADER, "办结", INVISIBLE, "已修好"),
        all_of(someone_saw(ASK_AGAIN), last_says(LEADER, "已修好", "提交办结"))),
    Row("unhappy comment of 4096 chars",
        prompt_then(_resolved, RESIDENT, "不满意", long_of("'\"<")),
        case_is(status="open", round=2)),
    Row("unhappy comment invisible",
        prompt_then(_resolved, RESIDENT, "不满意", INVISIBLE),
        all_of(case_is(status="resolved"), last_says(RESIDENT, ASK_AGAIN))),
    # --- markup in text, names, captions ------------------------------------------------
    Row("markup in group report", group("/report " + EVIL),
        all_of(cases(1, description=EVIL), someone_saw(EVIL))),
    Row("markup in reporter's name", group("/report 灯坏了", extra=named(EVIL_NAME)),
        someone_saw(f"{EVIL_NAME} {EVIL_NAME}")),
    Row("markup in caption", group(photo="ph", caption="/report " + EVIL),
        all_of(cases(1, description=EVIL), someone_saw(EVIL))),
    Row("markup in name on the work-chat fallback and group prompt",
        hostile_name_in_fallback,
        all_of(someone_saw(f"{EVIL_NAME}，机器人无法私信您", f"{EVIL_NAME} 请填写"),
               case_is(status="rejected", reject_reason=EVIL))),
    Row("markup in private description", mid_flow("description", EVIL),
        all_of(cases(1, description=EVIL), someone_saw(EVIL))),
    Row("markup in the bad-comment", prompt_then(_resolved, RESIDENT, "不满意", EVIL),
        all_of(case_is(status="open"), someone_saw(EVIL))),
    # --- right-to-left, zero-width, emoji -----------------------------------------------
    Row("right-to-left override in report", group(f"/report {RLO}灯坏了{RLO}"),
        all_of(cases(1, description="灯坏了"), nobody_saw(RLO))),
    Row("right-to-left override in name", group("/report 灯坏了", extra=named(f"{RLO}王芳")),
        all_of(someone_saw("王芳"), nobody_saw(RLO))),
    Row("zero-width inside text", group("/report 灯\u200b坏\u200d了"), cases(1)),
    Row("lone surrogates and control characters",
        group("/report 灯\ud800坏\x00了\x1b", extra=named("王\udfff\x07芳")),
        all_of(cases(1, description="灯坏了"), someone_saw("王芳 王芳"))),
    Row("emoji-only report", group(f"/report {EMOJI}"), cases(1, description=EMOJI)),
    Row("emoji-only private description", mid_flow("description", EMOJI),
        cases(1, description=EMOJI)),
    # --- other kinds of message -----------------------------------------------------------
    *[Row(f"{kind} in group is ignored", media_in_group(kind),
          all_of(cases(0), silent(BUILDING_CHAT))) for kind in GROUP_MEDIA],
    *[Row(f"{kind} in private gets help", private(extra=MEDIA[kind]),
          all_of(cases(0), last_says(RESIDENT, "/report"))) for kind in MEDIA],
    *[Row(f"{kind} during {stage}", mid_flow(stage, MEDIA[kind]),
          all_of(hint_says(HINTS[stage]), cases(1)))
      for stage in ("description", "photos", "location")
      for kind in MEDIA if not (stage == "location" and kind == "location")
      # A voice or video note is a description (tests/cases/test_voice.py).
      and not (stage == "description" and kind in ("voice", "video_note"))],
    *[Row(f"sticker during {stage}", mid_flow(stage, MEDIA["sticker"]),
          all_of(hint_says(HINTS[stage]), cases(1)))
      for stage in ("building", "category", "confirm")],
    Row("sticker as a reject reason",
        prompt_then(_reported, HEAD, "❌ 不属实", MEDIA["sticker"], "灯是好的"),
        all_of(someone_saw(ASK_AGAIN), case_is(status="rejected"))),
    Row("voice as a result", prompt_then(_confirmed, LEADER, "办结", MEDIA["voice"]),
        all_of(last_says(LEADER, ASK_AGAIN), case_is(status="open"))),
    # --- edited and forwarded -----------------------------------------------------------
    Row("edited /report makes no second case", edited_report,
        cases(1, description="楼道灯坏了")),
    Row("edit during the guided report is ignored", edited_in_flow,
        cases(1, description="垃圾桶满了")),
    Row("forwarded text in private", private("楼下有积水", extra=FORWARDED),
        all_of(cases(0), last_says(RESIDENT, "/report"))),
    Row("forwarded from a channel as the description",
        mid_flow("description", {"text": "通知：明天停水", **FORWARDED_CHANNEL}),
        cases(1, description="通知：明天停水", reporter_id=RESIDENT)),
    Row("forwarded photo with /report caption in group",
        group(photo="fw", caption="/report 转发：井盖丢了", extra=FORWARDED),
        cases(1, reporter_id=RESIDENT, description="转发：井盖丢了")),
    # --- not a person -------------------------------------------------------------------
    Row("anonymous admin /report", group("/report 路灯坏了", extra=as_anon_admin(BUILDING_CHAT)),
        all_of(cases(0), last_says(BUILDING_CHAT, POLITE_SELF))),
    Row("anonymous admin album with /report",
        group(photo="an", caption="/report 外墙脱落", media_group_id="ga",
              extra=as_anon_admin(BUILDING_CHAT)),
        all_of(cases(0), last_says(BUILDING_CHAT, POLITE_SELF))),
    Row("anonymous admin replies to the prompt", anon_reply_to_prompt,
        all_of(cases(0), last_says(BUILDING_CHAT, POLITE_SELF))),
    Row("anonymous admin /bind", group("/bind BSY-01-03", chat=-100777,
                                       extra=as_anon_admin(-100777)),
        last_says(-100777, POLITE_SELF)),
    Row("anonymous admin /whoami", group("/whoami", extra=as_anon_admin(BUILDING_CHAT)),
        last_says(BUILDING_CHAT, POLITE_SELF)),
    Row("anonymous admin /help", group("/help", extra=as_anon_admin(BUILDING_CHAT)),
        last_says(BUILDING_CHAT, POLITE_SELF)),
    Row("channel /report", group("/report 路灯坏了", extra=as_channel()),
        all_of(cases(0), last_says(BUILDING_CHAT, POLITE_SELF))),
    Row("channel chatter is ignored", group("大家好", extra=as_channel()),
        silent(BUILDING_CHAT)),
    Row("unit head reports a channel's message", staff_on_behalf_of_channel,
        cases(1, reporter_id=UNIT_HEAD, description="楼下有车堵住消防通道")),
    Row("other bot /report", group("/report 路灯坏了", extra=as_bot()),
        all_of(cases(0), silent(BUILDING_CHAT))),
    *[Row(f"other bot {command}", group(command, extra=as_bot()), silent(BUILDING_CHAT))
      for command in ("/whoami", "/help", "/bind BSY-01-03", "/cases", "/cancel")],
    Row("other bot in private", private("/start", user=OTHER_BOT, extra=as_bot()),
        silent(OTHER_BOT)),
    Row("other bot presses a button",
        button_data(_reported, lambda c: f"c1:vc:{c.id}:{c.rev}", user=OTHER_BOT),
        case_is(status="verifying")),
    # --- forged and odd callbacks -------------------------------------------------------
    *[Row(f"forged callback {data!r}",
          button_data(_reported, forged(data)),
          all_of(answered(), case_is(status="verifying")))
      for data in ("c1:vc:abc:1", "c1:vc:{id}", "c1:vc:", "c1:", "c1", "c1:zz:{id}:{rev}",
                   "c1:vc:99999999999999999999:{rev}", "c1:vc:{id}:99999999999999999999",
                   "c1:vc:-1:{rev}", "c1:vc:{id}:{rev}:x:y", "c1:vc:1.5:1", "c1:vc:²:1",
                   "c1:vc:{id}:{rev}\x00", "c1:rt:{id}:{rev}:excellent", "c1:cs:{id}:{rev}:",
                   "c1:cs:{id}:{rev}:<b>", "c1:ac:{id}:{rev}", "zz:" + "x" * 60, "",
                   "rf:ok", "pr:ok", "pr:no", "rf:b:1")],
    Row("callback for a case that does not exist",
        button_data(_reported, lambda c: f"c1:vc:{c.id + 999}:1"),
        answered("未找到")),
    Row("callback for a deleted case", deleted_case, all_of(answered("未找到"), cases(0))),
    Row("button pressed on an inline message",
        button_data(_reported, lambda c: f"c1:vc:{c.id}:{c.rev}", message="none"),
        all_of(answered(), case_is(status="open"))),
    Row("button pressed on a message too old to see",
        button_data(_reported, lambda c: f"c1:vc:{c.id}:{c.rev}", message="old"),
        all_of(answered(), case_is(status="open"))),
    Row("prompt button pressed on an inline message",
        button_data(_reported, lambda c: f"c1:vr:{c.id}:{c.rev}", message="none"),
        all_of(answered(), case_is(status="verifying"), no_state(HEAD))),
    Row("prompt button pressed on a message too old to see",
        button_data(_reported, lambda c: f"c1:vr:{c.id}:{c.rev}", message="old"),
        all_of(answered(), case_is(status="verifying"), no_state(HEAD))),
    Row("stranger presses the head's button",
        button_data(_reported, lambda c: f"c1:vc:{c.id}:{c.rev}", user=STRANGER),
        all_of(answered("无权"), case_is(status="verifying"))),
    *[Row(f"flow button {data!r} at {stage} ({message} message)",
          flow_button(stage, data, message),
          all_of(answered(), cases(0)))
      for stage, data, message in (
          ("building", "rf:b:99999999999999999999", "normal"),
          ("building", "rf:b:²", "normal"),
          ("building", "rf:b:-3", "normal"),
          ("building", "rf:bp:99999999999999999999", "normal"),
          ("building", "rf:bp:²", "normal"),
          ("building", "rf:bp:1", "old"),
          ("building", "rf:b:1", "none"),
          ("category", "rf:c:<b>x</b>", "normal"),
          ("category", "rf:c:", "normal"),
          ("category", "rf:c:other", "old"),
          ("photos", "rf:next", "old"),
          ("confirm", "rf:ok", "old"),
          ("confirm", "rf:ok", "none"),
          ("confirm", "rf:no", "none"),
      )],
    # --- at the same time, and faster than the network ----------------------------------
    Row("two staff press 受理 at once", two_staff_accept,
        all_of(events("report", "confirm", "accept"),
               someone_saw("已受理", "已失效"))),
    Row("the head presses ✅ twice at once", head_confirms_twice_at_once,
        all_of(events("report", "confirm"), someone_saw("已失效"))),
    Row("满意 and 不满意 at once", rate_and_unhappy_at_once,
        case_is(status=lambda s: s in ("closed", "resolved"))),
    Row("same button twice before delivery", same_button_before_delivery,
        all_of(events("report", "confirm", "accept"), someone_saw("已失效"))),
    Row("same update delivered twice", same_update_twice, events("report", "confirm")),
    Row("database locked while a button is pressed", database_locked,
        all_of(answered("稍后"), case_is(status="open"))),
    Row("submit pressed twice", submit_twice, cases(1)),
    Row("submit pressed twice at once", submit_twice_at_once, cases(1)),
    # --- commands with odd arguments ----------------------------------------------------
    *[Row(f"/case {arg!r}", private(f"/case {arg}".rstrip(), user=LEADER),
          last_says(LEADER, want))
      for arg, want in (("", "用法"), ("abc", "用法"), ("99999999999999999999", "用法"),
                        ("-1", "用法"), ("²", "用法"), ("١٢", "用法"), ("1 2", "用法"),
                        ("0", "未找到"), ("#5", "未找到"), ("<b>1</b>", "用法"),
                        (long_of("9", 5000), "用法"))],
    *[Row(f"/bind {arg[:20]!r}", bind(arg), last_says(-100777, want))
      for arg, want in (("a b c", "用法"), ("../../x", "不存在"), ("", "用法"),
                        ("<b>BSY</b>&", "不存在"), (long_of("x", 5000), "不存在"),
                        ("BSY-01-03/../../1", "不存在"))],
    Row("/bind by a resident", bind("BSY-01-03", user=RESIDENT), last_says(-100777, "无权")),
    Row("/bind in private", private("/bind BSY-01-03", user=LEADER),
        last_says(LEADER, "群里")),
    Row("/report with 5000 chars in private",
        mid_flow("category", "/report " + long_of("<b>水</b>", 5000)),
        cases(1, description=lambda d: d.startswith("<b>水</b>"))),
    *[Row(f"/start {payload[:20]!r}", start_payload(payload),
          all_of(hint_says("请选择您所在的楼栋"), cases(1)))
      for payload in ("b999999", "bxyz", long_of("b1", 200), "b99999999999999999999",
                      "b²", "b-1", "b1.5", "<b>")],
    # --- a flood of reports ---------------------------------------------------------------
    Row("a flood of group reports is limited", flood(RESIDENT, REPORT_LIMIT + 2),
        all_of(cases(REPORT_LIMIT), last_says(BUILDING_CHAT, "稍后再试"))),
    Row("the limit lifts after the window", flood_then_wait,
        cases(REPORT_LIMIT + 1, description="过了一阵又坏了")),
    Row("a flood then the private flow", flood_private,
        all_of(cases(REPORT_LIMIT), last_says(RESIDENT, "稍后再试"))),
    Row("a flood then an album", flood_album,
        all_of(cases(REPORT_LIMIT), last_says(BUILDING_CHAT, "稍后再试"))),
    Row("staff are not limited", flood(UNIT_HEAD, REPORT_LIMIT + 2, chat=BUILDING_CHAT),
        cases(REPORT_LIMIT + 2)),
    Row("another resident is not held back by the flood", flood_then_other,
        cases(REPORT_LIMIT + 1, reporter_id=RESIDENT2)),
    # --- long lists and histories ---------------------------------------------------------
    Row("a long history of long texts, asked for", case_detail_huge,
        someone_saw("办理记录", "我的诉求", "待办诉求")),
    Row("many cases full of markup, listed", many_cases_listed,
        someone_saw("待办诉求", "我的诉求")),
]

IDS = [row.name for row in TABLE]
assert len(set(IDS)) == len(IDS), [n for n in IDS if IDS.count(n) > 1]


@pytest.mark.parametrize("row", TABLE, ids=IDS)
async def test_hostile(h: Harness, row: Row, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    got = await row.steps(h)
    await h.deliver()
    await row.expect(h, got)
    await check_sane(h, caplog)


async def test_no_conversation_left_stuck(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """After odd input at every step, /cancel always ends the flow and /report starts anew."""
    for stage in STAGES[:-1]:
        await flow_to(h, RESIDENT2, stage)
        await h.private(RESIDENT2, extra=MEDIA["poll"])
        await h.private(RESIDENT2, "/cancel")
        assert h.last(RESIDENT2).text == "已取消。"
        assert await state_of(h, RESIDENT2, RESIDENT2) is None
    await h.private(RESIDENT2, "/report 最后还是报上了")
    await flow(h, RESIDENT2, "category", "done")
    assert [c.description for c in await h.cases()] == ["最后还是报上了"]
    await check_sane(h, caplog)


def test_checker_catches_bad_html() -> None:
    for bad in ("a < b", "a & b", "<b>x", "<b>x</i>", "<script>x</script>", "&nbsp;",
                '<a>x</a>', "<b onclick=\"x\">y</b>"):
        with pytest.raises(AssertionError):
            parse_html(bad)
    assert parse_html('<b>a</b> &lt;&amp;&#34; <a href="t">x</a>') == 'a <&" x'
