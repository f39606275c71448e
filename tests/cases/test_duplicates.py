"""是同一问题 (bot/cases/duplicates.py, handlers/duplicates.py) through the real Dispatcher: the
question, who may answer it, joining, declining, the timeout, and which cases are offered."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from bot.cases.duplicates import ANSWER_WITHIN, settle
from storage.models import Case, CaseFollower, CasePhoto, DuplicateOffer, OrgSettings
from tests.cases.test_handle import resolve
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING_CHAT,
    HEAD,
    LEADER,
    RESIDENT,
    RESIDENT2,
    STRANGER,
    Harness,
)

FIRST = "3单元楼道灯坏了，晚上很黑"
AGAIN = "3单元楼道的灯不亮"  # the same problem, in other words (same category: 市政设施)


async def offers(h: Harness) -> list[DuplicateOffer]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(DuplicateOffer).order_by(DuplicateOffer.id))).all())


async def followers_of(h: Harness, case_id: int) -> list[int]:
    async with h.app.sessions() as db:
        rows = await db.scalars(select(CaseFollower.person_id)
                                .where(CaseFollower.case_id == case_id))
        return list(rows.all())


async def first_case(h: Harness, confirm: bool = True) -> Case:
    case = await h.report_in_group(FIRST)
    if confirm:
        await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def flow_report(h: Harness, user: int, building: str,
                      location: tuple[float, float] | None = None) -> None:
    """The private flow up to 提交: building, 市政设施, no photo, a location or none."""
    await h.private(user, f"/report {AGAIN}")
    await h.press(user, h.last(user), building)
    await h.press(user, h.last(user), "市政设施")
    await h.press(user, h.last(user), "跳过")
    if location is None:
        await h.private(user, "跳过")
    else:
        await h.private(user, location=location)
    await h.press(user, h.last(user), "提交")


async def test_in_a_group_the_reporter_joins_the_open_case(h: Harness) -> None:
    await h.private(RESIDENT2, "/start")
    case = await first_case(h)
    said = await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}", photo="again-1")
    q = h.last(BUILDING_CHAT)
    assert q.labels == ["是同一问题", "不是，另报"] and q.reply_to == said["message_id"]
    assert f"#{case.id}" in q.text and "市政设施" in q.text and "待受理" in q.text
    assert "晚上很黑" in q.text
    assert "user5550001" not in q.text  # never its reporter
    assert len(await h.cases()) == 1
    # Someone else's press changes nothing.
    await h.press(RESIDENT, q, "是同一问题")
    assert h.answers()[-1] == "这个问题只能由反映人本人选择。"
    await h.press(RESIDENT2, q, "是同一问题")
    assert "已加入诉求" in h.answers()[-1] and q.labels == []
    assert f"已加入诉求 #{case.id}，共 2 户反映" in q.text  # the question, edited in place
    assert len(await h.cases()) == 1
    after = await h.case(case.id)
    assert after.followers == 1 and await followers_of(h, case.id) == [RESIDENT2]
    async with h.app.sessions() as db:
        photos = (await db.scalars(select(CasePhoto.file_id)
                                   .where(CasePhoto.case_id == case.id))).all()
    assert "again-1" in photos
    assert (await h.events(case.id))[-1] == "follow"
    assert any("又有居民反映同一问题" in t and "共 2 户" in t for t in h.texts(LEADER))
    [offer] = await offers(h)
    assert (offer.status, offer.filed_case_id) == ("joined", None)
    # A second press: already answered.
    await h.press_data(RESIDENT2, f"d1:{offer.id}:s", q)
    assert h.answers()[-1] == "已经选择过了。"

    # The result reaches them, with the rating buttons, and the card counts them.
    await h.private(LEADER, f"/case {case.id}")
    assert "受影响居民：2 户" in h.last(LEADER).text
    await resolve(h, LEADER, case.id, "已更换灯泡")
    got = h.last(RESIDENT2)
    assert "已更换灯泡" in got.text and got.labels == ["满意", "基本满意", "不满意"]


async def test_declined_files_a_new_case_replying_to_the_report(h: Harness) -> None:
    case = await first_case(h)
    said = await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    q = h.last(BUILDING_CHAT)
    await h.press(RESIDENT2, q, "不是，另报")
    first, second = await h.cases()
    assert first.id == case.id and second.reporter_id == RESIDENT2
    assert (second.description, second.source_message_id) == (AGAIN, said["message_id"])
    assert f"已作为新诉求 #{second.id} 受理" in q.text
    acks = [s for s in h.api.to(BUILDING_CHAT) if s.reply_to == said["message_id"]]
    assert any(f"#{second.id}" in s.text for s in acks)
    [offer] = await offers(h)
    assert (offer.status, offer.filed_case_id) == ("declined", second.id)
    assert (await h.case(case.id)).followers == 0


async def test_no_answer_files_it_after_five_minutes(h: Harness) -> None:
    await first_case(h)
    said = await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    q = h.last(BUILDING_CHAT)
    await h.advance(ANSWER_WITHIN - timedelta(seconds=30))
    assert len(await h.cases()) == 1
    await h.advance(timedelta(minutes=1))
    _, second = await h.cases()
    assert second.reporter_id == RESIDENT2 and second.source_message_id == said["message_id"]
    [offer] = await offers(h)
    assert (offer.status, offer.filed_case_id) == ("timed_out", second.id)
    # Pressed after the timeout: nothing changes, and they are told.
    await h.press(RESIDENT2, q, "是同一问题")
    assert h.answers()[-1] == "已经选择过了。"
    assert len(await h.cases()) == 2
    await h.advance(timedelta(minutes=10))
    assert len(await h.cases()) == 2  # settled once


async def test_privately_after_submit(h: Harness) -> None:
    case = await first_case(h)
    await flow_report(h, RESIDENT2, "柏树郢社区 3号楼")
    q = h.last(RESIDENT2)
    assert q.labels == ["是同一问题", "不是，另报"] and f"#{case.id}" in q.text
    assert "，这个问题" not in q.text  # no name in a private chat
    await h.press(RESIDENT2, q, "是同一问题")
    assert await followers_of(h, case.id) == [RESIDENT2]
    assert len(await h.cases()) == 1


async def test_private_timeout_files_the_flow_report(h: Harness) -> None:
    await first_case(h)
    await flow_report(h, RESIDENT2, "柏树郢社区 3号楼")
    await h.advance(ANSWER_WITHIN + timedelta(seconds=1))
    _, second = await h.cases()
    assert (second.category, second.description) == ("facility", AGAIN)
    assert any(f"#{second.id}" in t for t in h.texts(RESIDENT2))


async def test_not_offered_for_another_category_building_old_or_closed_case(
        h: Harness) -> None:
    case = await first_case(h)
    await h.say(BUILDING_CHAT, RESIDENT2, "/report 楼下垃圾好几天没人清运")  # 环境卫生
    await h.say(BUILDING5_CHAT, STRANGER, f"/report {AGAIN}")  # another building
    assert len(await h.cases()) == 3 and await offers(h) == []
    # Their own report again is not asked about either.
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {AGAIN}")
    assert len(await h.cases()) == 4 and await offers(h) == []
    # Older than the window (3 days): a new case.
    async with h.app.sessions() as db:
        await db.execute(update(Case).values(reported_at=h.clock.now() - timedelta(days=4)))
        await db.commit()
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    assert len(await h.cases()) == 5 and await offers(h) == []
    # Resolved: nor is a case whose result is in.
    await resolve(h, LEADER, case.id, "已修好")
    async with h.app.sessions() as db:
        await db.execute(update(Case).where(Case.id != case.id).values(status="closed"))
        await db.commit()
    await h.say(BUILDING_CHAT, STRANGER, f"/report {AGAIN}")
    assert len(await h.cases()) == 6 and await offers(h) == []


async def test_switched_off_by_the_policy(h: Harness) -> None:
    await first_case(h)
    async with h.app.sessions() as db:
        await db.execute(update(OrgSettings).values(duplicate_window=None))
        await db.commit()
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    assert len(await h.cases()) == 2 and await offers(h) == []


async def test_a_location_within_the_radius_finds_a_case_of_another_building(
        h: Harness) -> None:
    """Building 5's report at a point 30 m from building 3's case is offered it; at 200 m, not."""
    case = await first_case(h)
    async with h.app.sessions() as db:
        await db.execute(update(Case).where(Case.id == case.id)
                         .values(latitude=31.80000, longitude=117.29500))
        await db.commit()
    for user, lat in ((RESIDENT2, 31.80027), (STRANGER, 31.80180)):
        await flow_report(h, user, "柏树郢社区 5号楼", (lat, 117.29500))
    assert [o.person_id for o in await offers(h)] == [RESIDENT2]
    assert [c.reporter_id for c in await h.cases()] == [RESIDENT, STRANGER]


async def test_other_is_never_taken_for_the_same_problem(h: Harness) -> None:
    """其他 is what fits nowhere else: two such reports share nothing but that."""
    await h.report_in_group("快递柜不够用")
    await h.say(BUILDING_CHAT, RESIDENT2, "/report 快递柜太少了")
    assert [c.category for c in await h.cases()] == ["other", "other"]
    assert await offers(h) == []


async def test_an_album_is_asked_and_its_photos_join_the_case(h: Harness) -> None:
    case = await first_case(h)
    first = await h.say(BUILDING_CHAT, RESIDENT2, photo="al-0", caption=f"/report {AGAIN}",
                        media_group_id="al")
    await h.say(BUILDING_CHAT, RESIDENT2, photo="al-1", media_group_id="al")
    await h.advance(timedelta(seconds=5))  # the album tick finishes it: the question
    q = h.last(BUILDING_CHAT)
    assert q.labels == ["是同一问题", "不是，另报"] and q.reply_to == first["message_id"]
    assert len(await h.cases()) == 1
    await h.press(RESIDENT2, q, "是同一问题")
    assert len(await h.cases()) == 1
    async with h.app.sessions() as db:
        photos = set((await db.scalars(select(CasePhoto.file_id)
                                       .where(CasePhoto.case_id == case.id))).all())
    assert {"al-0", "al-1"} <= photos


async def test_privately_declined_files_the_flow_report(h: Harness) -> None:
    case = await first_case(h)
    await flow_report(h, RESIDENT2, "柏树郢社区 3号楼")
    await h.press(RESIDENT2, h.last(RESIDENT2), "不是，另报")
    first, second = await h.cases()
    assert first.id == case.id
    assert (second.reporter_id, second.category, second.description) == (
        RESIDENT2, "facility", AGAIN)
    assert any(f"已作为新诉求 #{second.id} 受理" in t for t in h.texts(RESIDENT2))
    [offer] = await offers(h)
    assert (offer.status, offer.filed_case_id, offer.chat_id) == (
        "declined", second.id, RESIDENT2)


async def test_an_answered_offer_is_not_settled_again_by_the_sweep(h: Harness) -> None:
    """The answer and the sweep (or two workers) claim the offer with one conditional
    UPDATE: whoever comes second changes nothing."""
    await first_case(h)
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    await h.press(RESIDENT2, h.last(BUILDING_CHAT), "是同一问题")
    [offer] = await offers(h)
    h.clock.advance(ANSWER_WITHIN * 2)
    assert await settle(h.app.sessions, h.app.ctx, offer.id) is False
    assert len(await h.cases()) == 1
    assert (await offers(h))[0].status == "joined"


async def test_a_case_they_follow_already_is_not_asked_again(h: Harness) -> None:
    case = await first_case(h)
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    await h.press(RESIDENT2, h.last(BUILDING_CHAT), "是同一问题")
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    assert len(await offers(h)) == 1
    first, second = await h.cases()
    assert first.id == case.id and second.reporter_id == RESIDENT2
