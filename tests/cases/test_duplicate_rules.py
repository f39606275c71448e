"""是同一问题 never endangers or exposes a resident (issue 20, defects 1, 2, 4, 5, 6, 7), through
the real Dispatcher: urgent reports are never held, a group never reads what was said
privately, a joined report keeps its words, photos and voice, a report joined to a case that
is rejected is filed as its own, an offer follows a case merged twice, and the flood limit
counts held reports."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from bot.cases.duplicates import ANSWER_WITHIN, OfferStatus
from bot.cases.lifecycle import REPORT_LIMIT, CaseStatus
from storage.models import Case, CasePhoto
from tests.cases.test_duplicates import AGAIN, first_case, followers_of, offers
from tests.cases.test_voice import voice
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

PRIVATE_WORDS = "对门502每天半夜吵架，吵得睡不着"


async def flow(h: Harness, user: int, text: str, category: str) -> None:
    """A private report of building 3 up to 提交: no photo, no location."""
    await h.private(user, f"/report {text}")
    await h.press(user, h.last(user), "柏树郢社区 3号楼")
    await h.press(user, h.last(user), category)
    await h.press(user, h.last(user), "跳过")
    await h.private(user, "跳过")
    await h.press(user, h.last(user), "提交")


async def test_an_urgent_report_is_filed_at_once_never_held(h: Harness) -> None:
    """Defect 1: a gas smell in a building with an open 消防安全 case reaches the handler at
    once, in its own words and with its photo; nobody is asked 是同一问题."""
    first = await h.report_in_group("楼道里堆满纸箱，消防通道堵了")
    assert (first.category, first.urgent) == ("fire", True)
    said = await h.say(BUILDING_CHAT, RESIDENT2, "/report 闻到很重的煤气味，好像漏气了",
                       photo="gas-1")
    assert await offers(h) == []
    _, gas = await h.cases()
    assert (gas.reporter_id, gas.category, gas.urgent, gas.status) == (
        RESIDENT2, "fire", True, CaseStatus.OPEN)
    assert gas.description == "闻到很重的煤气味，好像漏气了"
    assert gas.source_message_id == said["message_id"]
    card = h.card(LEADER, gas.id)
    assert "煤气味" in card.text and card.photos == ["gas-1"]
    assert all("是同一个问题吗" not in t for t in h.texts(BUILDING_CHAT))


async def test_a_group_never_reads_what_was_said_privately(h: Harness) -> None:
    """Defect 2: the question in a group names the category, number and status of a case
    reported privately, never its words; privately the words are shown as before."""
    await flow(h, RESIDENT, PRIVATE_WORDS, "矛盾纠纷")
    [case] = await h.cases()
    assert case.category == "dispute"
    await h.say(BUILDING_CHAT, RESIDENT2, "/report 楼上邻居半夜吵架")
    q = h.last(BUILDING_CHAT)
    assert q.labels == ["是同一问题", "不是，另报"]
    assert f"#{case.id}" in q.text and "矛盾纠纷" in q.text and "待核实" in q.text
    assert "502" not in q.text and "对门" not in q.text and "睡不着" not in q.text
    # Privately, the reporter-to-be may read the description as before.
    await flow(h, STRANGER, "邻居吵架很凶", "矛盾纠纷")
    private_q = h.last(STRANGER)
    assert private_q.labels == ["是同一问题", "不是，另报"] and "对门502" in private_q.text


async def test_a_unit_chat_report_is_not_quoted_in_the_building_chat(h: Harness) -> None:
    """What was said in another group is not this group's either."""
    from tests.harness import UNIT_CHAT

    case = await h.report_in_group("3单元楼道灯坏了，502门口最黑", chat=UNIT_CHAT)
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    q = h.last(BUILDING_CHAT)
    assert f"#{case.id}" in q.text and "502" not in q.text


async def test_the_handler_gets_a_joiners_words_and_photos(h: Harness) -> None:
    """Defect 4, in a group: the handler reads what the joiner said and gets their photo;
    /case shows it in the history."""
    case = await first_case(h)
    await h.say(BUILDING_CHAT, RESIDENT2, "/report 3单元楼道的灯不亮，二楼到五楼都黑",
                photo="again-1")
    await h.press(RESIDENT2, h.last(BUILDING_CHAT), "是同一问题")
    note = next(s for s in reversed(h.api.to(LEADER)) if "又有居民反映同一问题" in s.text)
    assert "二楼到五楼都黑" in note.text and "共 2 户" in note.text
    assert note.photos == ["again-1"]
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER).text
    assert "又有居民反映同一问题" in detail and "二楼到五楼都黑" in detail
    assert "照片 1 张" in detail.split("办理记录")[1]


async def test_the_handler_gets_a_joiners_voice(h: Harness) -> None:
    """Defect 4, privately: a joined voice note reaches the handler by its file_id, and the
    history says it was a voice."""
    case = await first_case(h)
    await h.private(RESIDENT2, "/start")
    await h.press(RESIDENT2, h.last(RESIDENT2), "柏树郢社区 3号楼")
    await h.press(RESIDENT2, h.last(RESIDENT2), "市政设施")
    await h.private(RESIDENT2, extra=voice("vf-join", 42))
    await h.press(RESIDENT2, h.last(RESIDENT2), "下一步")
    await h.private(RESIDENT2, "跳过")
    await h.press(RESIDENT2, h.last(RESIDENT2), "提交")
    await h.press(RESIDENT2, h.last(RESIDENT2), "是同一问题")
    assert await followers_of(h, case.id) == [RESIDENT2]
    sent = h.api.to(LEADER)
    note = next(i for i in range(len(sent) - 1, -1, -1) if "又有居民反映同一问题" in sent[i].text)
    assert "🎤 语音 0:42" in sent[note].text
    assert (sent[note + 1].voice, sent[note + 1].voice_kind) == ("vf-join", "voice")
    await h.private(LEADER, f"/case {case.id}")
    assert "🎤 语音 0:42" in h.last(LEADER).text.split("办理记录")[1]


async def test_a_report_joined_to_a_rejected_case_is_filed_as_its_own(h: Harness) -> None:
    """Defect 5: the head rejects the case a resident joined while it was being verified:
    the joiner's report becomes a case of its own, verified as any other, and they are told
    so, never that their report was rejected."""
    case = await first_case(h, confirm=False)
    said = await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}", photo="again-1")
    await h.press(RESIDENT2, h.last(BUILDING_CHAT), "是同一问题")
    assert await followers_of(h, case.id) == [RESIDENT2]
    await h.press(HEAD, h.card(HEAD, case.id), "❌ 不属实")
    await h.private(HEAD, "现场查看灯是好的")
    await h.advance(timedelta(seconds=30))  # the sweep files it
    first, own = await h.cases()
    assert first.status == CaseStatus.REJECTED and first.followers == 0
    assert await followers_of(h, case.id) == []
    assert (own.reporter_id, own.description, own.status, own.source_message_id) == (
        RESIDENT2, AGAIN, CaseStatus.VERIFYING, said["message_id"])
    async with h.app.sessions() as db:
        photos = (await db.scalars(select(CasePhoto.file_id)
                                   .where(CasePhoto.case_id == own.id))).all()
    assert list(photos) == ["again-1"]
    assert "属实" in " ".join(h.card(HEAD, own.id).labels)
    told = [s.text for s in h.api.to(BUILDING_CHAT) if s.reply_to == said["message_id"]]
    assert any(f"#{case.id}" in t and f"#{own.id}" in t for t in told)
    assert all("现场查看灯是好的" not in t for t in told + h.texts(RESIDENT2))
    [offer] = await offers(h)
    assert (offer.status, offer.filed_case_id) == (OfferStatus.REFILED, own.id)
    await h.advance(timedelta(minutes=5))
    assert len(await h.cases()) == 2  # filed once


async def test_an_offer_follows_a_case_merged_twice(h: Harness) -> None:
    """Defect 6: A → B → C while the question waits: 是同一问题 follows C."""
    a = await first_case(h)
    await h.say(BUILDING_CHAT, RESIDENT2, f"/report {AGAIN}")
    q = h.last(BUILDING_CHAT)
    b = await h.report_in_group("5号楼门口路灯坏了", user=STRANGER, chat=BUILDING5_CHAT)
    c = await h.report_in_group("5号楼门口路灯不亮", user=STRANGER, chat=BUILDING5_CHAT)
    # The merges themselves are tested in tests/cases/test_merge.py; here only their result.
    async with h.app.sessions() as db:
        for src, dst in ((a, b), (b, c)):
            await db.execute(update(Case).where(Case.id == src.id).values(
                status=CaseStatus.MERGED, merged_into_id=dst.id))
        await db.execute(update(Case).where(Case.id == c.id).values(status=CaseStatus.OPEN))
        await db.commit()
    await h.press(RESIDENT2, q, "是同一问题")
    assert len(await h.cases()) == 3
    assert await followers_of(h, c.id) == [RESIDENT2]
    assert f"已加入诉求 #{c.id}" in q.text


async def test_the_flood_limit_counts_held_reports(h: Harness) -> None:
    """Defect 7: 25 reports from one account while a case is open: REPORT_LIMIT questions,
    the rest refused at once; after the timeout, the held ones are filed with no refusal."""
    await first_case(h)
    before = len(h.api.to(BUILDING_CHAT))
    for i in range(25):
        h.clock.advance(timedelta(seconds=2))
        await h.say(BUILDING_CHAT, RESIDENT2, f"/report 第{i + 1}次：{AGAIN}")
    said = [s.text for s in h.api.to(BUILDING_CHAT)[before:]]
    assert sum("是同一个问题吗" in t for t in said) == REPORT_LIMIT
    assert sum("稍后再试" in t for t in said) == 25 - REPORT_LIMIT
    assert len(said) == 25
    assert len(await offers(h)) == REPORT_LIMIT
    await h.advance(ANSWER_WITHIN + timedelta(seconds=1))
    assert len(await h.cases()) == 1 + REPORT_LIMIT
    later = [s.text for s in h.api.to(BUILDING_CHAT)[before + 25:]]
    assert len(later) == REPORT_LIMIT and all("稍后再试" not in t for t in later)
