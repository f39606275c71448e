"""Followers (bot/cases/followers.py): residents who follow a case that is not their own report get
its reporter's notices, in private or as a reply in their own group, and may rate it."""

from __future__ import annotations

from bot.cases import followers
from bot.context import begin
from storage.models import Case
from tests.cases.test_handle import confirmed, resolve
from tests.harness import BUILDING_CHAT, HEAD, LEADER, RESIDENT, RESIDENT2, Harness


async def follow(h: Harness, case_id: int, person_id: int, chat_id: int | None = None,
                 message_id: int | None = None) -> bool:
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        case = await db.get(Case, case_id)
        assert case is not None
        joined = await followers.follow(tx, case, person_id, chat_id=chat_id,
                                        message_id=message_id, via="duplicate")
        await db.commit()
        return joined


async def test_a_follower_gets_the_result_and_may_rate(h: Harness) -> None:
    await h.private(RESIDENT2, "/start")
    case = await confirmed(h)
    assert await follow(h, case.id, RESIDENT2)
    # Twice, or the reporter themself: nothing changes.
    assert not await follow(h, case.id, RESIDENT2)
    assert not await follow(h, case.id, RESIDENT)
    assert (await h.case(case.id)).followers == 1
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await resolve(h, LEADER, case.id, "已更换灯泡")
    mine, theirs = h.last(RESIDENT), h.last(RESIDENT2)
    assert "已更换灯泡" in theirs.text and theirs.labels == ["满意", "基本满意", "不满意"]
    assert mine.text == theirs.text
    # The follower's rating settles the case; the reporter's button is then stale.
    await h.press(RESIDENT2, theirs, "满意")
    after = await h.case(case.id)
    assert (after.status, after.rating) == ("closed", "good")
    await h.press(RESIDENT, mine, "满意")
    assert (await h.case(case.id)).rating == "good"
    assert await h.events(case.id) == ["report", "confirm", "accept", "resolve", "rate"]


async def test_a_follower_unsatisfied_reopens(h: Harness) -> None:
    await h.private(RESIDENT2, "/start")
    case = await confirmed(h)
    await follow(h, case.id, RESIDENT2)
    await resolve(h, LEADER, case.id, "已修好")
    await h.press(RESIDENT2, h.last(RESIDENT2), "不满意")
    await h.private(RESIDENT2, "我家门口的灯还是不亮")
    after = await h.case(case.id)
    assert (after.status, after.round) == ("open", 2)
    assert "我家门口的灯还是不亮" in h.card(LEADER, case.id).text


async def test_the_card_counts_the_residents_affected(h: Harness) -> None:
    await h.private(RESIDENT2, "/start")
    case = await h.report_in_group()
    await follow(h, case.id, RESIDENT2)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert "受影响居民：2 户" in h.card(LEADER, case.id).text


async def test_a_follower_who_cannot_be_written_to_gets_a_reply_in_their_group(
        h: Harness) -> None:
    """Blocked the bot: the notice replies to their own report in their group."""
    await h.private(RESIDENT2, "/start")
    case = await confirmed(h)
    said = await h.say(BUILDING_CHAT, RESIDENT2, "我家这边的灯也坏了")
    await follow(h, case.id, RESIDENT2, BUILDING_CHAT, said["message_id"])
    h.api.failing[RESIDENT2] = (403, "Forbidden: bot can't initiate conversation with a user")
    await resolve(h, LEADER, case.id, "已修好")
    replies = [s for s in h.api.to(BUILDING_CHAT) if s.reply_to == said["message_id"]]
    assert replies and "已修好" in replies[-1].text
