"""Notices with read receipts (bot/notices/service.py, handlers/notices.py): the /notice
flow through
the real Dispatcher, 已阅 by the right and the wrong people, the summary and its reminder,
/notices, refusals, and a notice to 200 groups through the fake Bot API within Telegram's
limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.context import begin
from bot.notices import service as notices
from bot.org.roles import load_actor, node_by_code
from storage.models import Notice, NoticeCopy
from tests.e2e import building_chat, head, outbox_settled, wait_for
from tests.fakeserver import FakeBotApi
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING12_CHAT,
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    HEAD5,
    LEADER,
    LEADER2,
    RESIDENT,
    UNIT_CHAT,
    UNIT_HEAD,
    Harness,
)
from tests.telegram.test_delivery_faults import running

TEXT = "明天上午 8:00-12:00 停水，请提前储水。"


async def copies(h: Harness) -> list[NoticeCopy]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(NoticeCopy).order_by(NoticeCopy.id))).all())


async def node_id(h: Harness, code: str) -> int:
    async with h.app.sessions() as db:
        node = await node_by_code(db, code)
        assert node is not None
        return node.id


async def send_to_grid(h: Harness, photo: str | None = "n-1") -> None:
    await h.private(LEADER, "/notice")
    picker = h.last(LEADER)
    assert "柏树郢第一网格" in picker.labels and "选择楼栋" in picker.labels
    assert "柏树郢第二网格" not in picker.labels
    await h.press(LEADER, picker, "柏树郢第一网格")
    assert "将发送到 3 个群" in h.last(LEADER).text
    if photo is not None:
        await h.private(LEADER, photo=photo)
        assert "请再输入通知内容" in h.last(LEADER).text
    await h.private(LEADER, TEXT)
    preview = h.last(LEADER)
    assert TEXT in preview.text and "将发送到 3 个群" in preview.text
    assert ("附照片 1 张" in preview.text) is (photo is not None)
    await h.press(LEADER, preview, "发送")


def notice_in(h: Harness, chat: int) -> object:
    got = [s for s in h.api.to(chat) if TEXT in s.text]
    assert len(got) == 1, [s.text for s in h.api.to(chat)]
    return got[0]


async def test_a_grid_notice_reaches_every_group_and_heads_confirm_it(h: Harness) -> None:
    await h.private(HEAD5, "/start")
    await send_to_grid(h)
    for chat in (BUILDING_CHAT, UNIT_CHAT, BUILDING5_CHAT):
        sent = notice_in(h, chat)
        assert sent.labels == ["已阅"] and sent.photos == ["n-1"]  # type: ignore[attr-defined]
        assert "网格长" in sent.text  # type: ignore[attr-defined]
    assert not any(TEXT in s.text for s in h.api.to(BUILDING12_CHAT))
    assert len(await copies(h)) == 3
    summary = h.last(LEADER)
    assert "已确认 0/3 个群" in summary.text and "3号楼、3号楼 1、5号楼" in summary.text
    assert summary.labels == ["刷新", "提醒未确认"]

    # 已阅: a resident may not, the building head may, once; the unit head in the unit group.
    in_building = notice_in(h, BUILDING_CHAT)
    await h.press(RESIDENT, in_building, "已阅")  # type: ignore[arg-type]
    assert h.answers()[-1].startswith("请楼栋长")
    await h.press(HEAD, in_building, "已阅")  # type: ignore[arg-type]
    assert h.answers()[-1] == "已确认，谢谢！（已确认 1/3）"
    assert in_building.labels == ["✅ 已阅（楼栋长丙）"]  # type: ignore[attr-defined]
    await h.press(HEAD, in_building, "✅ 已阅（楼栋长丙）")  # type: ignore[arg-type]
    assert h.answers()[-1] == "楼栋长丙 已确认过了，谢谢。"
    await h.press(UNIT_HEAD, notice_in(h, UNIT_CHAT), "已阅")  # type: ignore[arg-type]
    await h.press(HEAD, notice_in(h, BUILDING5_CHAT), "已阅")  # type: ignore[arg-type]
    assert h.answers()[-1].startswith("请楼栋长")  # not the head of building 5

    # 刷新 edits the summary in place; 提醒未确认 reminds building 5's head, privately.
    await h.press(LEADER, summary, "刷新")
    assert "已确认 2/3 个群" in summary.text and "未确认：5号楼" in summary.text
    await h.press(LEADER, summary, "提醒未确认")
    assert h.answers()[-1] == "已私信提醒 1 位负责人：楼栋长己（5号楼）。"
    reminder = h.last(HEAD5)
    assert TEXT in reminder.text and "5号楼的群里点「已阅」" in reminder.text
    await h.press(LEADER, summary, "提醒未确认")
    assert "刚提醒过" in h.answers()[-1]
    assert len([t for t in h.texts(HEAD5) if TEXT in t]) == 1
    await h.advance(timedelta(minutes=31))
    await h.press(LEADER, summary, "提醒未确认")
    assert len([t for t in h.texts(HEAD5) if TEXT in t]) == 2

    await h.press(HEAD5, notice_in(h, BUILDING5_CHAT), "已阅")  # type: ignore[arg-type]
    assert any("已全部确认（3/3）" in t for t in h.texts(LEADER))
    got = await copies(h)
    assert [c.confirmed_by_id for c in got] == [HEAD, UNIT_HEAD, HEAD5]
    async with h.app.sessions() as db:
        [notice] = (await db.scalars(select(Notice))).all()
    assert (notice.status, notice.text, notice.photos) == ("sent", TEXT, ["n-1"])


async def test_chosen_buildings_only(h: Harness) -> None:
    await h.private(LEADER, "/notice")
    await h.press(LEADER, h.last(LEADER), "选择楼栋")
    picker = h.last(LEADER)
    assert picker.labels[:2] == ["3号楼", "5号楼"]
    await h.press(LEADER, picker, "5号楼")
    assert picker.labels[1] == "✅ 5号楼"
    await h.press(LEADER, picker, "选好了（1）")
    assert "将发送到 1 个群" in h.last(LEADER).text
    await h.private(LEADER, TEXT)
    await h.press(LEADER, h.last(LEADER), "发送")
    notice_in(h, BUILDING5_CHAT)
    assert not any(TEXT in s.text for s in h.api.to(BUILDING_CHAT))
    assert [c.chat_id for c in await copies(h)] == [BUILDING5_CHAT]


async def test_refusals(h: Harness) -> None:
    for user in (RESIDENT, HEAD, UNIT_HEAD):
        await h.private(user, "/notice")
        assert "只有网格长、社区和街道工作人员可以发布通知" in h.last(user).text
    await h.say(BUILDING_CHAT, LEADER, "/notice")
    assert "私信我" in h.last(BUILDING_CHAT).text
    # Another grid's leader: a forged scope button of grid 1 is refused.
    await h.private(LEADER2, "/notice")
    assert "柏树郢第一网格" not in h.last(LEADER2).labels
    await h.press_data(LEADER2, f"nf:s:{await node_id(h, 'BSY-01')}", h.last(LEADER2))
    assert h.answers()[-1] == "该范围不在您的辖区内。"
    async with h.app.sessions() as db:
        assert (await db.scalars(select(Notice))).all() == []
    # Too long a text is refused with the limit, and the draft waits for a shorter one.
    await h.private(LEADER, "/notice")
    await h.press(LEADER, h.last(LEADER), "柏树郢第一网格")
    await h.private(LEADER, "水" * (notices.TEXT_LIMIT + 1))
    assert "不超过 3500 字" in h.last(LEADER).text
    await h.private(LEADER, TEXT)
    assert TEXT in h.last(LEADER).text and "发送" in h.last(LEADER).labels
    # 取消 leaves nothing sent.
    await h.press(LEADER, h.last(LEADER), "取消")
    assert await copies(h) == []
    async with h.app.sessions() as db:
        assert [n.status for n in (await db.scalars(select(Notice))).all()] == ["cancelled"]


async def test_notices_lists_and_shows_one(h: Harness) -> None:
    await send_to_grid(h, photo=None)
    await h.private(LEADER, "/notices")
    listed = h.last(LEADER).text
    assert "#1 " in listed and "已确认 0/3" in listed and "停水" in listed
    await h.private(LEADER, "/notices 1")
    assert "已确认 0/3 个群" in h.last(LEADER).text
    assert h.last(LEADER).labels == ["刷新", "提醒未确认"]
    # The community's supervisor sees it (their area); another grid's leader does not.
    await h.private(COMMUNITY_SUP, "/notices 1")
    assert "已确认 0/3 个群" in h.last(COMMUNITY_SUP).text
    await h.private(LEADER2, "/notices 1")
    assert "未找到该通知" in h.last(LEADER2).text
    await h.private(LEADER2, "/notices")
    assert "还没有发布过通知" in h.last(LEADER2).text


@pytest.mark.slow
async def test_a_notice_to_200_groups_keeps_to_telegrams_limits(tmp_path: Path) -> None:
    """Through the fake Bot API, which answers 429 to any call over Telegram's limits: the
    outbox paces 200 group messages (30 a second at most) and none is refused."""
    server = FakeBotApi(enforce_limits=True)
    run = await running(tmp_path, server, 200)  # 200 grids of one bound building each
    app = run.app
    try:
        async with app.sessions() as db:
            tx = await begin(db, app.ctx)
            street = await load_actor(db, 100)
            notice = await notices.create(tx, street, "street", ["S"])
            notice, chats = await notices.send(tx, street, notice.id, TEXT, [])
        assert chats == 200
        app.delivery.wake()
        await wait_for(lambda: outbox_settled(app), 60, "the notice")
        assert server.limit_violations == []
        got = [r for r in server.received if TEXT in r.text]
        assert len(got) == 200
        assert {r.chat_id for r in got} == {building_chat(i) for i in range(200)}
        # Heads confirm: the counts follow.
        async with app.sessions() as db:
            rows = (await db.scalars(select(NoticeCopy).order_by(NoticeCopy.id))).all()
            for i, copy in enumerate(rows[:3]):
                tx = await begin(db, app.ctx)
                done = await notices.confirm(tx, await load_actor(db, head(i)), copy.id)
            assert (done.confirmed, done.total) == (3, 200)
    finally:
        await run.close()
        await server.stop()
