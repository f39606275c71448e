"""The outbox sender against the in-process fake API: splitting, faults, fallbacks, order."""

from __future__ import annotations

from datetime import timedelta

from aiogram.methods import SendMediaGroup, SendMessage, SendPhoto
from sqlalchemy import select

from bot.cases.outbox import enqueue
from storage.models import Node, Outbox
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    RESIDENT,
    WORK_CHAT,
    Harness,
)


async def put(h: Harness, key: str, chat: int, text: str, **kwargs: object) -> None:
    async with h.app.sessions() as db:
        await enqueue(db, key, chat, text, h.clock.now(), **kwargs)  # type: ignore[arg-type]
        await db.commit()


async def statuses(h: Harness) -> dict[str, str]:
    async with h.app.sessions() as db:
        rows = (await db.scalars(select(Outbox))).all()
        return {r.dedupe_key: r.status for r in rows}


async def test_long_text_is_split_at_line_breaks_with_buttons_on_the_last_piece(
        h: Harness) -> None:
    text = "\n".join(f"第{i}行 " + "字" * 60 for i in range(200))  # about 13 000 characters
    buttons = [[{"text": "受理", "callback_data": "c1:ac:1:1"}]]
    await put(h, "long", LEADER, text, buttons=buttons)
    await h.deliver()
    pieces = h.api.to(LEADER)
    assert len(pieces) == 4 and all(len(p.text) <= 4096 for p in pieces)
    assert "\n".join(p.text for p in pieces) == text
    assert [bool(p.buttons) for p in pieces] == [False, False, False, True]
    assert all(p.text.startswith("第") for p in pieces)  # cut between lines


async def test_caption_over_1024_moves_text_into_a_following_message(h: Harness) -> None:
    await put(h, "cap", LEADER, "说明" * 600, photos=["p1"])
    await h.deliver()
    photo, text = h.api.calls_of(SendPhoto), h.api.calls_of(SendMessage)
    assert len(photo) == 1 and photo[0].caption is None
    assert len(text) == 1 and text[0].text == "说明" * 600


async def test_more_than_ten_photos_go_in_groups_then_text(h: Harness) -> None:
    await put(h, "many", LEADER, "十二张照片", photos=[f"p{i}" for i in range(12)])
    await h.deliver()
    assert [len(c.media) for c in h.api.calls_of(SendMediaGroup)] == [10, 2]
    assert h.api.calls_of(SendMessage)[-1].text == "十二张照片"


async def test_rejected_photo_falls_back_to_text(h: Harness) -> None:
    h.api.fail_next(LEADER, 400, "Bad Request: wrong file identifier/HTTP URL specified")
    await put(h, "bad-photo", LEADER, "有照片的卡片", photos=["gone"])
    await h.deliver()
    assert h.last(LEADER).text == "有照片的卡片" and h.last(LEADER).photos == []
    assert (await statuses(h))["bad-photo"] == "sent"


async def test_retry_after_holds_only_that_chat_and_keeps_its_order(h: Harness) -> None:
    h.api.fail_next(LEADER, 429, "Too Many Requests: retry after 5", retry_after=5)
    await put(h, "a1", LEADER, "第一条")
    await put(h, "b1", HEAD, "别的聊天")
    await put(h, "a2", LEADER, "第二条")
    await h.deliver()
    assert h.texts(HEAD) == ["别的聊天"] and h.texts(LEADER) == []
    h.clock.advance(timedelta(seconds=4))
    await h.deliver()
    assert h.texts(LEADER) == []
    h.clock.advance(timedelta(seconds=2))
    await h.deliver()
    assert h.texts(LEADER) == ["第一条", "第二条"]


async def test_server_errors_are_retried_with_backoff_in_order(h: Harness) -> None:
    for _ in range(3):
        h.api.fail_next(LEADER, 500, "Internal Server Error")
    await put(h, "x1", LEADER, "一")
    await put(h, "x2", LEADER, "二")
    for _ in range(4):
        await h.deliver()
        h.clock.advance(timedelta(seconds=20))
    await h.deliver()
    assert h.texts(LEADER) == ["一", "二"]
    async with h.app.sessions() as db:
        row = await db.scalar(select(Outbox).where(Outbox.dedupe_key == "x1"))
        assert row is not None and row.attempts == 4


async def test_failed_text_after_photos_resumes_without_resending_photos(h: Harness) -> None:
    await put(h, "album", LEADER, "相册卡片", photos=["p1", "p2"])
    h.api.queued[LEADER] = []
    # The media group goes through; the text after it meets a server error once.
    original = h.api._answer
    calls = {"n": 0}

    def flaky(method):  # type: ignore[no-untyped-def]
        if isinstance(method, SendMessage) and calls["n"] == 0:
            calls["n"] += 1
            return 500, {"ok": False, "error_code": 500, "description": "Internal"}
        return original(method)

    h.api._answer = flaky  # type: ignore[method-assign]
    await h.deliver()
    h.clock.advance(timedelta(seconds=10))
    await h.deliver()
    assert len(h.api.calls_of(SendMediaGroup)) == 1
    assert h.texts(LEADER) == ["相册卡片"]


async def test_group_migrated_to_supergroup_follows_the_new_id(h: Harness) -> None:
    new_id = BUILDING_CHAT - 7
    h.api.fail_next(BUILDING_CHAT, 400, "Bad Request: group chat was upgraded to a supergroup",
                    migrate_to_chat_id=new_id)
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    assert any("#1" in t for t in h.texts(new_id))
    async with h.app.sessions() as db:
        node = await db.scalar(select(Node).where(Node.code == "BSY-01-03"))
        assert node is not None and node.chat_id == new_id
    await h.say(new_id, RESIDENT, "/report 电梯坏了")
    assert len(await h.cases()) == 2


async def test_reporter_reached_nowhere_is_reported_to_the_grid_leader(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 先报一次")
    case = await h.report_privately(RESIDENT, "楼下垃圾堆积", "环境卫生")
    h.api.forbid(RESIDENT)  # they blocked the bot after reporting privately
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已清运")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    assert any("无法送达反映人" in t and f"#{case.id}" in t for t in h.texts(LEADER))


async def test_group_that_removed_the_bot_makes_the_reporter_unreachable(h: Harness) -> None:
    case = await h.report_in_group()
    h.api.forbid(RESIDENT)
    h.api.failing[BUILDING_CHAT] = (403, "Forbidden: bot was kicked from the supergroup chat")
    await h.press(HEAD, h.card(HEAD, case.id), "❌ 不属实")
    await h.private(HEAD, "经核实不属实")
    assert any("无法送达反映人" in t for t in h.texts(LEADER))
    assert "undeliverable" in (await statuses(h)).values()


async def test_cards_moved_past_are_not_released_when_the_person_starts(h: Harness) -> None:
    case = await h.report_in_group()
    h.api.forbid(RESIDENT)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已修好")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    copy = [s for s in h.api.to(BUILDING_CHAT) if s.buttons][-1]
    await h.feed(h.updates.callback(RESIDENT, copy.button_data("满意"), copy))
    h.api.allow(RESIDENT)
    await h.private(RESIDENT, "/my")
    assert not any("请对本次办理进行评价" in t for t in h.texts(RESIDENT))
    assert "superseded" in (await statuses(h)).values()


async def test_work_chat_copy_of_a_card_masks_phone_numbers(h: Harness) -> None:
    h.api.forbid(HEAD)
    await h.report_in_group("漏水，请联系13912345678")
    copy = h.last(WORK_CHAT)
    assert "139****5678" in copy.text and "13912345678" not in copy.text
