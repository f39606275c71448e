"""Collect: reports in groups (text, photo, album, reply, on behalf) and the private flow."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from storage.models import CasePhoto, Person
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    RESIDENT,
    RESIDENT2,
    UNIT_CHAT,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
)


async def photos(h: Harness, case_id: int) -> list[str]:
    async with h.app.sessions() as db:
        rows = await db.scalars(select(CasePhoto.file_id).where(CasePhoto.case_id == case_id)
                                .order_by(CasePhoto.id))
        return list(rows.all())


async def test_text_report_in_building_chat(h: Harness) -> None:
    msg = await h.say(BUILDING_CHAT, RESIDENT, "/report 3单元楼道灯坏了")
    [case] = await h.cases()
    assert case.description == "3单元楼道灯坏了"
    # No category chosen in a group: the sample's keywords (楼道灯) file it as 市政设施.
    assert case.status == "verifying" and case.category == "facility"
    assert case.reporter_id == RESIDENT and case.source_message_id == msg["message_id"]
    ack = h.last(BUILDING_CHAT)
    assert f"#{case.id}" in ack.text and ack.reply_to == msg["message_id"]
    card = h.card(HEAD, case.id)
    assert "3单元楼道灯坏了" in card.text and card.labels[:2] == ["✅ 属实", "❌ 不属实"]


async def test_report_with_bot_mention(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report@gridbot_test_bot 垃圾没人清")
    [case] = await h.cases()
    assert case.description == "垃圾没人清"


async def test_empty_report_gets_prompt_and_reply_reports(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    assert await h.cases() == []
    prompt = h.last(BUILDING_CHAT)
    assert "回复本条消息" in prompt.text
    await h.say(BUILDING_CHAT, RESIDENT, "电梯停了", reply_to=h.updates.bot_message(prompt))
    [case] = await h.cases()
    assert case.description == "电梯停了"


async def test_reply_to_other_bot_message_is_not_a_report(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 电梯停了")
    ack = h.last(BUILDING_CHAT)
    await h.say(BUILDING_CHAT, RESIDENT, "谢谢", reply_to=h.updates.bot_message(ack))
    assert len(await h.cases()) == 1


async def test_photo_with_caption_is_one_case_with_photo(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, photo="ph-1", caption="/report 井盖松动")
    [case] = await h.cases()
    assert case.description == "井盖松动"
    assert await photos(h, case.id) == ["ph-1"]
    card = h.card(HEAD, case.id)
    assert card.photos == ["ph-1"]


async def test_album_is_one_case_with_all_photos(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, photo="a1", caption="/report 外墙脱落",
                media_group_id="g1")
    await h.say(BUILDING_CHAT, RESIDENT, photo="a2", media_group_id="g1")
    await h.say(BUILDING_CHAT, RESIDENT, photo="a3", media_group_id="g1")
    assert await h.cases() == []  # the album has not settled yet
    await h.advance(timedelta(seconds=5))
    [case] = await h.cases()
    assert case.description == "外墙脱落"
    assert await photos(h, case.id) == ["a1", "a2", "a3"]
    assert any(f"#{case.id}" in t for t in h.texts(BUILDING_CHAT))


async def test_album_without_report_caption_is_ignored(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, photo="x1", media_group_id="g2")
    await h.say(BUILDING_CHAT, RESIDENT, photo="x2", media_group_id="g2")
    await h.advance(timedelta(hours=2))
    assert await h.cases() == []


async def test_album_split_by_restart_is_one_case(h: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import make_harness

    await h.say(BUILDING_CHAT, RESIDENT, photo="r1", caption="/report 漏水", media_group_id="g3")
    await h.app.close()
    h2 = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
    h2.updates = h.updates
    await h2.say(BUILDING_CHAT, RESIDENT, photo="r2", media_group_id="g3")
    await h2.advance(timedelta(seconds=5))
    [case] = await h2.cases()
    assert await photos(h2, case.id) == ["r1", "r2"]
    await h2.app.close()


async def test_unit_chat_report_records_unit(h: Harness) -> None:
    await h.say(UNIT_CHAT, RESIDENT, "/report 单元门禁坏了")
    [case] = await h.cases()
    assert case.unit_id is not None


async def test_unit_head_reports_on_behalf(h: Harness) -> None:
    original = h.updates.message(UNIT_CHAT, RESIDENT2, "我家楼上一直漏水", name="王阿姨")["message"]
    await h.say(UNIT_CHAT, UNIT_HEAD, "/report", reply_to=original)
    [case] = await h.cases()
    assert case.reporter_id == RESIDENT2 and case.submitted_by_id == UNIT_HEAD
    assert case.description == "我家楼上一直漏水"
    card = h.card(HEAD, case.id)
    assert "王阿姨" in card.text and "单元长丁 代报" in card.text


async def test_report_in_work_chat_or_unbound_chat_is_refused(h: Harness) -> None:
    await h.say(WORK_CHAT, RESIDENT, "/report 路灯坏了")
    assert "网格工作群" in h.last(WORK_CHAT).text
    await h.say(-100777, RESIDENT, "/report 路灯坏了")
    assert "尚未绑定" in h.last(-100777).text
    assert await h.cases() == []


async def test_private_guided_report(h: Harness) -> None:
    await h.private(RESIDENT, "/start")
    pick = h.last(RESIDENT)
    assert "楼栋" in pick.text
    await h.press(RESIDENT, pick, "柏树郢社区 3号楼")
    cats = h.last(RESIDENT)
    await h.press(RESIDENT, cats, "环境卫生")
    assert "描述" in h.last(RESIDENT).text
    await h.private(RESIDENT, "垃圾桶满了三天没人清运")
    ask_photos = h.last(RESIDENT)
    await h.private(RESIDENT, photo="p1")
    await h.private(RESIDENT, photo="p2", media_group_id="pg", caption=None)
    await h.press(RESIDENT, ask_photos, "下一步")
    await h.private(RESIDENT, location=(31.2304, 121.4737))
    summary = h.last(RESIDENT)
    assert "垃圾桶满了" in summary.text and "照片：2 张" in summary.text
    await h.press(RESIDENT, summary, "提交")
    [case] = await h.cases()
    assert case.category == "sanitation" and case.latitude == 31.2304
    assert await photos(h, case.id) == ["p1", "p2"]
    assert f"#{case.id}" in h.last(RESIDENT).text
    assert case.deadline_at - case.reported_at == timedelta(hours=48)
    assert "31.23040" in h.card(HEAD, case.id).text


async def test_deep_link_links_building_and_cancel_leaves(h: Harness) -> None:
    async with h.app.sessions() as db:
        from bot.org.roles import node_by_code

        node = await node_by_code(db, "BSY-01-05")
        assert node is not None
    await h.private(RESIDENT2, f"/start b{node.id}")
    assert "5号楼" in h.texts(RESIDENT2)[0]
    assert "类别" in h.last(RESIDENT2).text  # straight to the category
    await h.private(RESIDENT2, "/cancel")
    assert h.last(RESIDENT2).text == "已取消。"
    async with h.app.sessions() as db:
        person = await db.get(Person, RESIDENT2)
        assert person is not None and person.building_id == node.id
    await h.private(RESIDENT2, "随便说点什么")
    assert await h.cases() == []


async def test_private_report_with_args_skips_description(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 先在群里报一次")  # links the building
    case = await h.report_privately(RESIDENT, "楼下有人乱停车", "治安隐患")
    assert case.description == "楼下有人乱停车" and case.category == "security"


async def test_urgent_category_skips_verification(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 先报一次")
    case = await h.report_privately(RESIDENT, "楼道堆放杂物堵住消防通道", "消防安全")
    assert case.urgent and case.status == "open" and case.verified == "skipped"
    card = h.card(LEADER, case.id)
    assert "紧急" in card.text and "受理" in card.labels
