"""专项任务 (issue 22, point 3) through the real Dispatcher: /task by a community or street
supervisor (title, what to do with photos, grids, deadline, location), the cards to the grids'
leaders, 完成 with photos (and a location where asked) by the leader or a member, 无法完成
with a reason, the sender's summary refreshed in place, 提醒未完成, the overdue alert to the
leader and a day later to the sender, /tasks by role, refusals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aiogram.methods import EditMessageText
from sqlalchemy import select

from bot.org.roles import node_by_code
from bot.rounds import campaigns
from bot.telegram.fake import Sent
from storage.models import Campaign, CampaignGrid, Reminder
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    STREET_SUP,
    Harness,
    make_harness,
)

TITLE = "防汛巡查"
BODY = "今晚有暴雨，请巡查本网格地下车库和低洼处，清理排水口。"
GRID1, GRID2 = "柏树郢第一网格", "柏树郢第二网格"


async def send_task(h: Harness, sender: int = COMMUNITY_SUP, *, grids: tuple[str, ...] = (),
                    community: bool = False, street: bool = False,
                    deadline: str = "明天 18:00",
                    typed: str | None = None, location: bool = False,
                    photo: str | None = "t-1") -> Sent:
    """The whole /task flow; returns the sender's summary."""
    await h.private(sender, "/task")
    assert "请输入任务标题" in h.last(sender).text
    await h.private(sender, TITLE)
    assert "请输入要做什么" in h.last(sender).text
    if photo is not None:
        await h.private(sender, photo=photo)
        assert "请再输入要做什么" in h.last(sender).text
    await h.private(sender, BODY)
    picker = h.last(sender)
    assert GRID1 in picker.labels and GRID2 in picker.labels
    if community:
        await h.press(sender, picker, "柏树郢社区（全部网格）")
    if street:
        await h.press(sender, picker, "全街道")
        assert "✅ 全街道" in picker.labels and f"✅ {GRID2}" in picker.labels
    for grid in grids:
        await h.press(sender, picker, grid)
    chosen = len(grids) or 2
    await h.press(sender, picker, f"选好了（{chosen}）")
    ask = h.last(sender)
    assert f"已选 {chosen} 个网格" in ask.text
    if typed is not None:
        await h.private(sender, typed)
    else:
        await h.press(sender, ask, deadline)
    await h.press(sender, h.last(sender), "需要定位" if location else "不需要")
    preview = h.last(sender)
    assert TITLE in preview.text and BODY in preview.text
    assert ("附照片 1 张" in preview.text) is (photo is not None)
    assert ("完成时需要定位" in preview.text) is location
    await h.press(sender, preview, "发布")
    summary = h.last(sender)
    assert "专项任务 #" in summary.text and "已完成 0/" in summary.text
    return summary


def card_of(h: Harness, chat: int, title: str = TITLE) -> Sent:
    cards = [s for s in h.api.to(chat) if title in s.text and len(s.labels) == 2]
    assert cards, h.texts(chat)
    return cards[-1]


async def parts(h: Harness) -> list[CampaignGrid]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(CampaignGrid).order_by(CampaignGrid.id))).all())


def edited(h: Harness, summary: Sent) -> int:
    """How many times the summary was edited in place."""
    return sum(1 for c in h.api.calls_of(EditMessageText)
               if c.chat_id == summary.chat_id and c.message_id == summary.message_id)


async def complete(h: Harness, user: int, card: Sent, *, photos: int = 1,
                   location: bool = False, note: str = "已巡查，排水口已清理。") -> None:
    await h.press(user, card, "完成")
    assert "请发送现场照片" in h.last(user).text
    for i in range(photos):
        await h.private(user, photo=f"done-{user}-{i}")
    await h.private(user, note)
    if location:
        assert "还需要：定位" in h.last(user).text
        await h.private(user, location=(31.80, 117.30))
    preview = h.last(user)
    assert note in preview.text and f"照片 {photos} 张" in preview.text
    await h.press(user, preview, "提交")


async def test_a_community_task_to_both_grids(h: Harness) -> None:
    summary = await send_task(h, community=True, location=True)
    async with h.app.sessions() as db:
        [campaign] = (await db.scalars(select(Campaign))).all()
    assert (campaign.title, campaign.body, campaign.photos, campaign.needs_location) == (
        TITLE, BODY, ["t-1"], True)
    assert campaign.summary_message_id == summary.message_id
    async with h.app.sessions() as db:
        community = await node_by_code(db, "BSY")
    assert community is not None and campaign.scope_node_id == community.id
    # 明天 18:00 in Shanghai: 2026-11-24 10:00 UTC.
    assert campaign.deadline_at.isoformat() == "2026-11-24T10:00:00+00:00"
    got = await parts(h)
    assert [p.status for p in got] == [campaigns.TaskStatus.PENDING] * 2
    assert "⏳ 柏树郢第一网格 未完成" in summary.text and "⏳ 柏树郢第二网格 未完成" in summary.text
    assert summary.labels == ["刷新", "提醒未完成"]

    card = card_of(h, LEADER)
    assert card.labels == ["完成", "无法完成"] and card.photos == ["t-1"]
    assert BODY in card.text and "截止：11-24 18:00" in card.text and GRID1 in card.text
    card2 = card_of(h, LEADER2)
    assert GRID2 in card2.text
    assert not [s for s in h.api.to(MEMBER) if TITLE in s.text]  # the leader's card

    # 完成 needs a photo, a note and (here) a location; then the summary is edited in place.
    await h.press(LEADER, card, "完成")
    await h.private(LEADER, "已巡查。")
    assert "还需要：照片" in h.last(LEADER).text
    await h.press(LEADER, card, "完成")  # starts again: the note is dropped
    await complete(h, LEADER, card, photos=2, location=True)
    assert "本网格已完成" in h.last(LEADER).text
    first = (await parts(h))[0]
    assert (first.status, first.done_by_id, first.photos, first.note) == (
        campaigns.TaskStatus.DONE, LEADER, [f"done-{LEADER}-0", f"done-{LEADER}-1"],
        "已巡查，排水口已清理。")
    assert (first.lat, first.lon) == (31.80, 117.30) and first.done_at == h.clock.now()
    assert edited(h, summary) == 1
    assert "已完成 1/2" in summary.text
    assert "✅ 柏树郢第一网格 已完成（照片 2 张，网格长甲" in summary.text

    # A second 完成 on the same card is refused.
    await h.press(LEADER, card, "完成")
    assert h.answers()[-1] == "本网格已完成这项任务（网格长甲提交）。"

    # 无法完成 with a reason.
    await h.press(LEADER2, card2, "无法完成")
    assert "请说明无法完成的原因" in h.last(LEADER2).text
    await h.private(LEADER2, "车库被水淹，无法进入。")
    assert "无法完成" in h.last(LEADER2).text
    second = (await parts(h))[1]
    assert (second.status, second.note, second.done_by_id) == (
        campaigns.TaskStatus.CANNOT, "车库被水淹，无法进入。", LEADER2)
    assert edited(h, summary) == 2
    assert "⚠️ 柏树郢第二网格 无法完成：车库被水淹，无法进入。（网格长庚）" in summary.text
    assert summary.labels == ["刷新", "📷 柏树郢第一网格"]  # nobody left to remind

    # 📷: grid 1's photos and note, privately to the sender; nobody else may.
    await h.press(COMMUNITY_SUP, summary, "📷 柏树郢第一网格")
    evidence = [s for s in h.api.to(COMMUNITY_SUP) if s.photos]
    assert [p for s in evidence for p in s.photos] == [f"done-{LEADER}-0", f"done-{LEADER}-1"]
    assert any("已巡查，排水口已清理。" in s.text and "网格长甲" in s.text
               for s in h.api.to(COMMUNITY_SUP))
    await h.press(LEADER2, summary, "📷 柏树郢第一网格")
    assert h.answers()[-1] == "未找到该任务，或您无权查看。"


async def test_a_member_completes_and_the_leader_is_told_so(h: Harness) -> None:
    summary = await send_task(h, STREET_SUP, grids=(GRID1,), photo=None, deadline="3 天后")
    assert "截止：11-26 18:00" in summary.text
    # The member has no card: /tasks lists the grid's task with a button to open it.
    await h.private(MEMBER, "/tasks")
    listing = h.last(MEMBER)
    assert "本网格的专项任务" in listing.text and "⏳ 未完成" in listing.text
    await h.press(MEMBER, listing, "任务 #1")
    card = card_of(h, MEMBER)
    await complete(h, MEMBER, card, photos=1)
    [part] = await parts(h)
    assert (part.status, part.done_by_id, part.lat) == (campaigns.TaskStatus.DONE, MEMBER,
                                                        None)
    assert "✅ 柏树郢第一网格 已完成（照片 1 张，网格员乙" in summary.text
    # The leader's card: refused now, with who did it.
    await h.press(LEADER, card_of(h, LEADER), "完成")
    assert h.answers()[-1] == "本网格已完成这项任务（网格员乙提交）。"


async def test_remind_the_grids_not_done_at_most_every_half_hour(h: Harness) -> None:
    summary = await send_task(h, community=True)
    await complete(h, LEADER, card_of(h, LEADER))
    before = len(h.texts(LEADER2))
    await h.press(COMMUNITY_SUP, summary, "提醒未完成")
    assert h.answers()[-1] == "已提醒 1 个未完成的网格。"
    reminder = h.last(LEADER2)
    assert len(h.texts(LEADER2)) == before + 1
    assert "提醒：这项专项任务本网格还未完成" in reminder.text and reminder.labels == [
        "完成", "无法完成"]
    assert not any("提醒" in t for t in h.texts(LEADER)[-1:])  # done: not reminded
    assert "上次提醒" in summary.text
    await h.press(COMMUNITY_SUP, summary, "提醒未完成")
    assert "刚提醒过" in h.answers()[-1]
    assert len(h.texts(LEADER2)) == before + 1
    await h.advance(timedelta(minutes=31))
    await h.press(COMMUNITY_SUP, summary, "提醒未完成")
    assert len(h.texts(LEADER2)) == before + 2
    # Only the sender may.
    await h.press(LEADER2, summary, "提醒未完成")
    assert h.answers()[-1] == "未找到该任务，或您无权查看。"


async def test_overdue_alerts_the_leader_then_the_sender_once(h: Harness) -> None:
    summary = await send_task(h, STREET_SUP, street=True, deadline="今天 18:00")
    await complete(h, LEADER, card_of(h, LEADER))
    await h.advance(timedelta(hours=7, minutes=50))  # 17:50: not yet
    assert not [t for t in h.texts(LEADER2) if "已逾期" in t]
    await h.advance(timedelta(minutes=15))  # 18:05
    lists = [t for t in h.texts(LEADER2) if "已逾期" in t]
    assert len(lists) == 1 and f"专项任务 #1「{TITLE}」{GRID2} 已逾期" in lists[0]
    assert not [t for t in h.texts(LEADER) if "已逾期" in t]  # done in time
    async with h.app.sessions() as db:
        [reminder] = (await db.scalars(select(Reminder))).all()
    assert (reminder.kind, reminder.person_id) == (campaigns.OVERDUE_KIND, LEADER2)
    await h.press(STREET_SUP, summary, "刷新")
    assert "🔴 柏树郢第二网格 已逾期" in summary.text
    await h.advance(timedelta(hours=12))
    assert len([t for t in h.texts(LEADER2) if "已逾期" in t]) == 1  # once
    assert not [t for t in h.texts(STREET_SUP) if "已逾期一天" in t]
    await h.advance(timedelta(hours=12))  # a day past the deadline: the sender
    told = [t for t in h.texts(STREET_SUP) if "已逾期一天" in t]
    assert len(told) == 1 and f"仍有 1 个网格未完成：{GRID2}" in told[0]
    await h.advance(timedelta(days=1))
    assert len([t for t in h.texts(STREET_SUP) if "已逾期一天" in t]) == 1
    [_done, late] = await parts(h)
    assert late.leader_alerted_at is not None and late.sender_alerted_at is not None


async def test_an_overdue_line_done_meanwhile_is_dropped(h: Harness) -> None:
    await send_task(h, STREET_SUP, grids=(GRID2,), deadline="今天 18:00")
    h.clock.advance(timedelta(hours=8, minutes=5))
    async with h.app.sessions() as db:
        from bot.context import begin

        tx = await begin(db, h.app.ctx)
        assert await campaigns.run_due(tx) == 1  # owed, not yet gathered
    await h.press(LEADER2, card_of(h, LEADER2), "无法完成")
    await h.private(LEADER2, "人手不够。")
    await h.advance(timedelta(minutes=1))
    assert not [t for t in h.texts(LEADER2) if "已逾期" in t]
    async with h.app.sessions() as db:
        [reminder] = (await db.scalars(select(Reminder))).all()
    assert reminder.status == "dropped" and "cannot" in (reminder.reason or "")


async def test_a_typed_deadline_and_a_wrong_one(h: Harness) -> None:
    await h.private(COMMUNITY_SUP, "/task")
    await h.private(COMMUNITY_SUP, TITLE)
    await h.private(COMMUNITY_SUP, BODY)
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), GRID1)
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "选好了（1）")
    await h.private(COMMUNITY_SUP, "下周吧")
    assert "没看懂这个时间" in h.last(COMMUNITY_SUP).text
    await h.private(COMMUNITY_SUP, "11-23 08:00")  # this morning has passed: next year
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "不需要")
    assert "截止：11-23 08:00" in h.last(COMMUNITY_SUP).text
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "取消")
    async with h.app.sessions() as db:
        assert not (await db.scalars(select(Campaign))).all()
    summary = await send_task(h, grids=(GRID1,), typed="１２-１０ 18:00")
    assert "截止：12-10 18:00" in summary.text


async def test_tasks_by_role(h: Harness) -> None:
    await send_task(h, grids=(GRID1, GRID2))
    await complete(h, LEADER, card_of(h, LEADER))
    await h.private(COMMUNITY_SUP, "/tasks")
    mine = h.last(COMMUNITY_SUP).text
    assert "我发布的专项任务" in mine and f"#1「{TITLE}」" in mine and "已完成 1/2" in mine
    await h.private(LEADER, "/tasks")
    assert "本网格的专项任务" in h.last(LEADER).text and "✅ 已完成" in h.last(LEADER).text
    assert h.last(LEADER).labels == []  # done: nothing to open
    await h.private(LEADER2, "/tasks")
    assert "⏳ 未完成" in h.last(LEADER2).text and h.last(LEADER2).labels == ["任务 #1"]
    await h.private(STREET_SUP, "/tasks")
    assert "还没有专项任务" in h.last(STREET_SUP).text
    for person in (RESIDENT, HEAD):
        await h.private(person, "/tasks")
        assert "只有网格工作人员和社区、街道工作人员可以查看" in h.last(person).text


async def test_refusals(h: Harness) -> None:
    for person in (LEADER, MEMBER, RESIDENT):
        await h.private(person, "/task")
        assert h.last(person).text == "只有社区和街道工作人员可以发布专项任务。"
    await h.say(BUILDING_CHAT, RESIDENT, "/task")
    assert "私信我" in h.last(BUILDING_CHAT).text
    summary = await send_task(h, community=True)
    card = card_of(h, LEADER)
    # Someone else than the grid's staff, and another grid's leader.
    for person in (RESIDENT, LEADER2, HEAD, COMMUNITY_SUP):
        await h.press_data(person, card.button_data("完成"), card)
        assert h.answers()[-1] == "只有本网格的网格长和网格员可以提交这项任务。"
    # 提交 without a photo: the preview never comes; a forged 提交 finds no flow.
    await h.press(LEADER, card, "完成")
    await h.private(LEADER, "做完了")
    assert "还需要：照片" in h.last(LEADER).text
    await h.press_data(LEADER, "td:ok")
    assert "照片" in h.answers()[-1] or "过期" in h.answers()[-1]
    assert [p.status for p in await parts(h)] == [campaigns.TaskStatus.PENDING] * 2
    assert edited(h, summary) == 0
    # Nothing of the task in any group.
    assert not [s for s in h.api.to(BUILDING_CHAT) if TITLE in s.text]


async def test_in_english(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, locale="en")
    try:
        await h.private(COMMUNITY_SUP, "/task")
        assert "New task" in h.last(COMMUNITY_SUP).text
        await h.private(COMMUNITY_SUP, "Flood patrol")
        await h.private(COMMUNITY_SUP, "Check the drains.")
        await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), GRID1)
        await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "Done (1)")
        await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "Tomorrow 18:00")
        await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "Not required")
        await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "Publish")
        summary = h.last(COMMUNITY_SUP)
        assert "Done in 0/1 grids" in summary.text and summary.labels == [
            "Refresh", "Remind the rest"]
        card = card_of(h, LEADER, "Flood patrol")
        assert card.labels == ["Done", "Cannot do"] and "Deadline: 11-24 18:00" in card.text
        await h.press(LEADER, card, "Cannot do")
        await h.private(LEADER, "The road is flooded.")
        assert "⚠️ 柏树郢第一网格 cannot do it: The road is flooded." in summary.text
    finally:
        await h.app.close()
