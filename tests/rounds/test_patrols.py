"""巡查 (issue 22, point 1) through the real Dispatcher: /patrol starts a patrol, a live
location (its updates arrive as edited messages, as Telegram sends them), points, photos and
notes belong to it, 结束巡查 sums it up with the buildings of the grid it came near; 发现问题
files a case found on patrol in the building they are at; /patrols by role; the timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from sqlalchemy import select

from bot.cases.registry_edit import apply_registry
from bot.cases.status import CaseStatus
from bot.ops.privacy import erase_person, export_person
from bot.org.registry import parse_registry
from bot.telegram.fake import Sent
from bot.telegram.inbox_scope import acts_on
from storage.models import CasePhoto, Node, Patrol, PatrolBuilding, PatrolItem, PatrolPoint
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    HEAD5,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    WORK_CHAT,
    Harness,
)

# The sample registry's buildings with points (WGS-84), as a district would give them.
POINTS = {"BSY-01-03": [117.295, 31.800], "BSY-01-05": [117.300, 31.806],
          "BSY-02-12": [117.310, 31.800]}
NEAR_3 = (31.8002, 117.2951)  # (lat, lon) about 25 m from 3号楼
NEAR_5 = (31.8059, 117.3002)  # about 20 m from 5号楼
NOWHERE = (31.803, 117.2975)  # between them, more than 50 m from both


def registry(*, member_in_two: bool = False, radius: str | None = None,
             no_member: bool = False) -> str:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text("utf-8"))
    if radius:
        data["policy"]["patrol_radius"] = radius
    for grid in data["streets"][0]["communities"][0]["grids"]:
        for b in grid["buildings"]:
            b["point"] = POINTS.get(b["code"])
        if member_in_two and grid["code"] == "BSY-02":
            grid["members"] = [{"id": MEMBER, "name": "网格员乙"}]
        if no_member:
            grid.pop("members", None)
    return yaml.safe_dump(data, allow_unicode=True)


async def load(h: Harness, text: str) -> None:
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def start(h: Harness, who: int = MEMBER) -> Sent:
    """开始巡查; the message with the patrol's buttons (发现问题, 结束巡查)."""
    await h.private(who, "/patrol")
    await h.press(who, h.last(who), "🚶 开始巡查")
    assert "巡查已开始" in h.last(who).text
    return h.last(who)


def live(lat_lon: tuple[float, float], period: int = 3600) -> dict[str, Any]:
    return {"location": {"latitude": lat_lon[0], "longitude": lat_lon[1],
                         "live_period": period}}


async def edit_live(h: Harness, msg: dict[str, Any], lat_lon: tuple[float, float],
                    seconds: int, update_id: int) -> None:
    """Telegram's update of a live location: the same message, edited, with a new place."""
    edited = {**msg, "edit_date": msg["date"] + seconds,
              "location": {"latitude": lat_lon[0], "longitude": lat_lon[1],
                           "live_period": msg["location"]["live_period"],
                           "horizontal_accuracy": 12.5}}
    await h.feed({"update_id": update_id, "edited_message": edited})


async def patrols(h: Harness) -> list[Patrol]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(Patrol).order_by(Patrol.id))).all())


async def rows(h: Harness, model: Any, patrol_id: int) -> list[Any]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(model).where(model.patrol_id == patrol_id)))
                    .all())


async def test_a_patrol_with_live_location_points_photos_and_notes(h: Harness) -> None:
    await load(h, registry())
    # Edited messages reach the handlers: the bot asks Telegram for them, and the inbox keeps
    # a private one that carries a location (a group's edits are chatter).
    assert "edited_message" in h.app.dp.resolve_used_update_types()
    private_edit = {"update_id": 1, "edited_message": {
        "message_id": 1, "date": 0, "chat": {"id": MEMBER, "type": "private"},
        "location": {"latitude": 1.0, "longitude": 2.0}}}
    assert acts_on(private_edit, 1)
    group_edit = {"update_id": 2, "edited_message": {
        "message_id": 1, "date": 0, "chat": {"id": BUILDING_CHAT, "type": "supergroup"},
        "text": "chatter"}}
    assert not acts_on(group_edit, 1)

    await start(h)
    [patrol] = await patrols(h)
    assert patrol.person_id == MEMBER and patrol.ended_at is None
    assert patrol.started_at == h.clock.now()

    h.clock.advance(timedelta(minutes=2))
    msg = await h.private(MEMBER, extra=live(NEAR_3))
    assert "已开始记录实时位置" in h.last(MEMBER).text and "3号楼" in h.last(MEMBER).text
    answers = len(h.texts(MEMBER))
    h.clock.advance(timedelta(minutes=10))
    await edit_live(h, msg, NOWHERE, 600, 700001)
    h.clock.advance(timedelta(minutes=10))
    await edit_live(h, msg, NEAR_5, 1200, 700002)
    assert len(h.texts(MEMBER)) == answers  # a live location's updates are not answered
    points = await rows(h, PatrolPoint, patrol.id)
    assert [(p.lat, p.lon, p.live) for p in points] == [
        (*NEAR_3, True), (*NOWHERE, True), (*NEAR_5, True)]

    # A point shared one by one; a photo; a note.
    h.clock.advance(timedelta(minutes=5))
    await h.private(MEMBER, location=NOWHERE)
    assert "位置已记录" in h.last(MEMBER).text
    await h.private(MEMBER, photo="patrol-photo-1", caption="3号楼北侧绿化带")
    assert "照片已记入" in h.last(MEMBER).text
    await h.private(MEMBER, "5号楼单元门门禁正常，楼道整洁")
    assert "已记入本次巡查" in h.last(MEMBER).text
    items = await rows(h, PatrolItem, patrol.id)
    assert [(i.file_id, i.text) for i in items] == [
        ("patrol-photo-1", "3号楼北侧绿化带"), (None, "5号楼单元门门禁正常，楼道整洁")]
    assert (items[0].lat, items[0].lon) == NOWHERE  # placed at the latest point

    # A second /patrol shows the patrol under way with its buttons; it starts no other.
    await h.private(MEMBER, "/patrol")
    shown = h.last(MEMBER)
    assert "正在进行" in shown.text and shown.labels == ["⚠️ 发现问题", "🏁 结束巡查"]
    assert len(await patrols(h)) == 1

    h.clock.advance(timedelta(minutes=40))
    await h.press(MEMBER, shown, "🏁 结束巡查")
    summary = h.last(MEMBER).text
    assert "巡查结束" in summary and "柏树郢第一网格" in summary
    assert "10:00 – 11:07" in summary and "1 小时 7 分" in summary
    assert "位置点：4 个" in summary
    assert "经过楼栋：3号楼、5号楼（2 栋）" in summary
    assert "照片 1 张，记录 1 条，发现问题 0 件" in summary
    [patrol] = await patrols(h)
    assert patrol.ended_at == h.clock.now() and not patrol.ended_by_timeout
    covered = await rows(h, PatrolBuilding, patrol.id)
    assert len(covered) == 2
    # Over: what they send now is no longer the patrol's.
    await h.private(MEMBER, location=NEAR_3)
    assert len(await rows(h, PatrolPoint, patrol.id)) == 4


async def test_found_on_patrol_files_a_case_in_the_building_they_are_at(h: Harness) -> None:
    await load(h, registry())
    panel = await start(h)
    await h.private(MEMBER, photo="old-photo")  # long before: stays the patrol's
    h.clock.advance(timedelta(minutes=30))
    await h.private(MEMBER, location=NEAR_5)
    await h.private(MEMBER, photo="manhole-0")  # just taken, then 发现问题
    h.clock.advance(timedelta(minutes=1))
    await h.press(MEMBER, panel, "⚠️ 发现问题")
    assert "请描述发现的问题" in h.last(MEMBER).text
    assert "已附上刚才拍的 1 张照片" in h.last(MEMBER).text
    await h.private(MEMBER, photo="manhole-1")  # a photo before the text
    assert "请再写一句问题描述" in h.last(MEMBER).text
    await h.private(MEMBER, "5号楼门口井盖松动，踩上去晃")
    assert "照片：2 张" in h.last(MEMBER).text
    await h.private(MEMBER, photo="manhole-2")  # and one after
    preview = h.last(MEMBER)
    assert "照片：3 张" in preview.text and "5号楼门口井盖松动" in preview.text
    await h.press(MEMBER, preview, "提交")

    [case] = await h.cases()
    assert case.source == "patrol" and case.patrol_id == (await patrols(h))[0].id
    assert case.status == CaseStatus.OPEN and case.verified == "staff"
    assert case.reporter_id == MEMBER and case.category == "facility"
    assert (case.latitude, case.longitude) == NEAR_5
    async with h.app.sessions() as db:
        building = await db.get(Node, case.building_id)
        photos = (await db.scalars(select(CasePhoto.file_id)
                                   .where(CasePhoto.case_id == case.id))).all()
    assert building is not None and building.code == "BSY-01-05"
    assert sorted(photos) == ["manhole-0", "manhole-1", "manhole-2"]
    assert f"#{case.id}" in h.last(MEMBER).text and "5号楼" in h.last(MEMBER).text
    # The grid leader's card says it was found on patrol; no building head verifies it.
    assert any(f"巡查发现 #{case.id}" in t for t in h.texts(LEADER))
    assert not any(f"#{case.id}" in t for t in h.texts(HEAD5))
    assert not any(f"#{case.id}" in t for t in h.texts(HEAD))
    items = await rows(h, PatrolItem, case.patrol_id)
    assert sorted((i.file_id or i.text or "", i.case_id) for i in items) == [
        ("5号楼门口井盖松动，踩上去晃", case.id), ("manhole-0", case.id),
        ("manhole-1", case.id), ("manhole-2", case.id), ("old-photo", None)]

    # The patrol goes on, and its summary counts the case.
    await h.private(MEMBER, "/patrol")
    await h.press(MEMBER, h.last(MEMBER), "🏁 结束巡查")
    assert "发现问题 1 件" in h.last(MEMBER).text


async def test_found_with_no_building_near_asks_which(h: Harness) -> None:
    await load(h, registry())
    panel = await start(h)
    await h.private(MEMBER, location=NOWHERE)
    await h.press(MEMBER, panel, "⚠️ 发现问题")
    await h.private(MEMBER, "路边垃圾堆积，有异味")
    await h.press(MEMBER, h.last(MEMBER), "提交")
    question = h.last(MEMBER)
    assert "请选择问题所在的楼栋" in question.text
    assert len(question.labels) == 2 and not await h.cases()  # the grid's two buildings
    await h.press(MEMBER, question, next(x for x in question.labels if "3号楼" in x))
    [case] = await h.cases()
    assert case.source == "patrol" and case.category == "sanitation"
    async with h.app.sessions() as db:
        patrol = await db.get(Patrol, case.patrol_id)
    assert patrol is not None and patrol.person_id == MEMBER


async def test_not_grid_staff_refused(h: Harness) -> None:
    await load(h, registry())
    for who in (RESIDENT, HEAD, COMMUNITY_SUP):
        await h.private(who, "/patrol")
        assert "巡查仅限网格长和网格员" in h.last(who).text, who
        assert not h.last(who).labels
    await h.private(RESIDENT, "/patrols")
    assert "巡查记录仅" in h.last(RESIDENT).text
    # A forged 开始巡查 for a grid that is not theirs.
    await h.press_data(LEADER2, "pt:s:" + str(await grid_id(h, "BSY-01")))
    assert any("巡查仅限" in a for a in h.answers())
    assert await patrols(h) == []


async def test_in_a_group_only_a_pointer(h: Harness) -> None:
    await load(h, registry())
    await h.say(WORK_CHAT, MEMBER, "/patrol")
    assert "私聊" in h.last(WORK_CHAT).text and not h.last(WORK_CHAT).labels
    assert await patrols(h) == []
    # What a patrolling member says in a group is never the patrol's.
    await start(h)
    await h.say(WORK_CHAT, MEMBER, "/patrols")
    assert "私聊" in h.last(WORK_CHAT).text
    await h.say(WORK_CHAT, MEMBER, photo="group-photo",
                extra={"reply_to_message": {"message_id": 1, "date": 0, "text": "x",
                                            "chat": {"id": WORK_CHAT, "type": "supergroup"},
                                            "from": {"id": 1, "is_bot": True,
                                                     "first_name": "bot"}}})
    assert await rows(h, PatrolItem, (await patrols(h))[0].id) == []


async def grid_id(h: Harness, code: str) -> int:
    from bot.org.directory import directory

    async with h.app.sessions() as db:
        return (await directory(db)).by_code[code].id


async def test_a_person_in_two_grids_chooses(h: Harness) -> None:
    await load(h, registry(member_in_two=True))
    await h.private(MEMBER, "/patrol")
    prompt = h.last(MEMBER)
    assert "请选择本次巡查的网格" in prompt.text
    assert prompt.labels == ["🚶 开始巡查 · 柏树郢第一网格", "🚶 开始巡查 · 柏树郢第二网格"]
    await h.press(MEMBER, prompt, "🚶 开始巡查 · 柏树郢第二网格")
    [patrol] = await patrols(h)
    assert patrol.grid_id == await grid_id(h, "BSY-02")
    await h.private(MEMBER, location=(31.8001, 117.3101))  # by 12号楼
    assert "12号楼" in h.last(MEMBER).text


async def test_patrols_listed_by_role(h: Harness) -> None:
    await load(h, registry())
    for who in (MEMBER, LEADER, LEADER2):
        await start(h, who)
        h.clock.advance(timedelta(minutes=30))
        await h.private(who, "/patrol")
        await h.press(who, h.last(who), "🏁 结束巡查")
    await start(h, MEMBER)  # under way

    def lines(who: int) -> list[str]:
        return h.last(who).text.splitlines()[1:]

    await h.private(MEMBER, "/patrols")
    assert "巡查记录" in h.last(MEMBER).text
    mine = lines(MEMBER)
    assert len(mine) == 2 and all("网格员乙" in x for x in mine)
    assert "进行中" in mine[0] and "30 分钟" in mine[1]  # newest first
    await h.private(LEADER, "/patrols")
    assert len(lines(LEADER)) == 3
    assert not any("网格长庚" in x for x in lines(LEADER))
    await h.private(LEADER2, "/patrols")
    assert len(lines(LEADER2)) == 1 and "柏树郢第二网格" in lines(LEADER2)[0]
    for supervisor in (COMMUNITY_SUP, STREET_SUP):
        await h.private(supervisor, "/patrols")
        assert len(lines(supervisor)) == 4, supervisor


async def test_a_patrol_nobody_ends_is_ended_by_the_sweep(h: Harness) -> None:
    await load(h, registry())
    await start(h)
    h.clock.advance(timedelta(hours=1))
    await h.private(MEMBER, location=NEAR_3)
    last = h.clock.now()
    await h.advance(timedelta(hours=7, minutes=59))
    [patrol] = await patrols(h)
    assert patrol.ended_at is None
    await h.advance(timedelta(minutes=2))
    [patrol] = await patrols(h)
    assert patrol.ended_at == last and patrol.ended_by_timeout
    told = h.last(MEMBER).text
    assert "巡查已自动结束" in told and "8 小时" in told and "3号楼" in told
    await h.advance(timedelta(hours=1))
    assert sum("巡查已自动结束" in t for t in h.texts(MEMBER)) == 1
    # Its buttons are stale now, and /patrol offers a new one.
    await h.private(MEMBER, "/patrol")
    assert h.last(MEMBER).labels == ["🚶 开始巡查"]


async def test_a_draft_whose_patrol_timed_out_is_dropped(h: Harness) -> None:
    await load(h, registry())
    panel = await start(h)
    await h.press(MEMBER, panel, "⚠️ 发现问题")
    await h.private(MEMBER, photo="late-photo")
    await h.advance(timedelta(hours=8, minutes=1))
    assert (await patrols(h))[0].ended_by_timeout
    await h.private(MEMBER, "楼道有积水")
    assert "这次巡查已结束" in h.last(MEMBER).text
    assert await h.cases() == []
    await h.private(MEMBER, "楼道有积水")  # the draft is gone: no longer the patrol's
    assert "这次巡查已结束" not in h.last(MEMBER).text and await h.cases() == []


async def test_patrol_radius_from_the_registry(h: Harness) -> None:
    await load(h, registry(radius="10m"))
    await start(h)
    await h.private(MEMBER, location=NEAR_3)  # about 25 m: not within 10 m
    [patrol] = await patrols(h)
    assert await rows(h, PatrolBuilding, patrol.id) == []


async def test_privacy_export_and_erase_cover_patrols(h: Harness) -> None:
    text = registry()
    await load(h, text)
    await start(h)
    await h.private(MEMBER, location=NEAR_3)
    await h.private(MEMBER, "楼道堆物已清理")
    async with h.app.sessions() as db:
        data = await export_person(db, MEMBER, h.clock.now())
    [exported] = data["patrols"]
    assert exported["grid"] == "BSY-01" and exported["buildings"] == ["BSY-01-03"]
    assert exported["points"][0]["lat"] == NEAR_3[0]
    assert exported["items"][0]["text"] == "楼道堆物已清理"
    await load(h, registry(no_member=True))
    async with h.app.sessions() as db:
        erased = await erase_person(db, MEMBER)
    assert erased.patrols == 1
    [patrol] = await patrols(h)
    assert patrol.person_id == 0 and patrol.ended_at is not None  # counted, nobody's
    assert await rows(h, PatrolPoint, patrol.id) == []
    assert await rows(h, PatrolItem, patrol.id) == []
    assert len(await rows(h, PatrolBuilding, patrol.id)) == 1
    await h.advance(timedelta(hours=9))
    assert await h.outbox_count("pending") == 0


async def test_the_demo_shows_a_patrol_that_finds_a_problem() -> None:
    import io

    from bot.demo import run_demo

    out = io.StringIO()
    await run_demo(out)
    text = out.getvalue()
    patrol = text[text.index("网格员巡查"):]
    for expected in ("巡查已开始", "［位置］", "照片已记入本次巡查", "已附上刚才拍的 1 张照片",
                     "编号 #2（5号楼）", "网格长甲（私聊） 看到：［附照片 photo-manhole］",
                     "巡查发现 #2", "巡查结束", "发现问题 1 件"):
        assert expected in patrol, expected
