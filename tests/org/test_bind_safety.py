"""`/bind` cannot take a chat away: a bound chat (or a place bound to a chat) moves only when
the person asking is in scope of both the old and the new place and confirms with a button
that names both; a stale, forwarded or someone else's press changes nothing."""

from __future__ import annotations

from datetime import timedelta

from bot.org.roles import node_by_chat, node_by_code
from bot.telegram.fake import Sent
from tests.harness import (
    BUILDING12_CHAT,
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    RESIDENT,
    WORK_CHAT,
    Harness,
)

CONFIRM, CANCEL = "确认改绑", "取消"


async def bindings(h: Harness) -> dict[str, int | None]:
    """The chat of each place these tests touch."""
    async with h.app.sessions() as db:
        found: dict[str, int | None] = {}
        for code in ("BSY-01", "BSY-01-03", "BSY-01-03/1", "BSY-01-03/2", "BSY-02-12"):
            node = await node_by_code(db, code)
            assert node is not None
            found[code] = node.chat_id
        return found


def now_reads(h: Harness, sent: Sent) -> Sent:
    """A message as the people in its chat see it now (after the bot edited it)."""
    return next(m for m in h.api.to(sent.chat_id) if m.message_id == sent.message_id)


async def place_of(h: Harness, chat_id: int) -> str | None:
    async with h.app.sessions() as db:
        node = await node_by_chat(db, chat_id)
        return node.code if node else None


async def test_a_leader_of_another_grid_cannot_take_a_residents_group(h: Harness) -> None:
    before = await bindings(h)
    await h.say(BUILDING_CHAT, LEADER2, "/bind BSY-02-12")
    reply = h.last(BUILDING_CHAT)
    assert "不在您的管辖范围" in reply.text and "3号楼" in reply.text, reply.text
    assert reply.buttons == []
    assert await bindings(h) == before
    # Reports in the group still go to its own building.
    case = await h.report_in_group("楼道墙上贴满小广告")
    assert await place_of(h, BUILDING_CHAT) == "BSY-01-03"
    assert h.card(HEAD, case.id), "the building head of BSY-01-03 verifies it"


async def test_a_typo_asks_first_naming_both_places_and_warns_of_the_audience(
        h: Harness) -> None:
    before = await bindings(h)
    await h.say(BUILDING_CHAT, LEADER, "/bind BSY-01")  # meant BSY-01-03/1
    question = h.last(BUILDING_CHAT)
    for named in ("3号楼", "BSY-01-03", "柏树郢第一网格", "BSY-01", "另一个群",
                  "居民群改为网格工作群"):
        assert named in question.text, question.text
    assert question.labels == [CONFIRM, CANCEL]
    assert await bindings(h) == before, "nothing changes before the button"
    # A case reported meanwhile still treats the group as the building's residents' group.
    case = await h.report_in_group("电梯异响")
    assert h.card(HEAD, case.id) and await place_of(h, BUILDING_CHAT) == "BSY-01-03"

    await h.press(LEADER, question, CANCEL)
    assert "已取消" in now_reads(h, question).text
    assert now_reads(h, question).buttons == []
    assert await bindings(h) == before


async def test_only_its_author_in_its_chat_while_fresh_can_confirm(h: Harness) -> None:
    before = await bindings(h)
    await h.say(BUILDING_CHAT, LEADER, "/bind BSY-01")
    question = h.last(BUILDING_CHAT)
    data = question.button_data(CONFIRM)

    # Someone else in scope of both places presses it: refused, nothing changes.
    await h.press(COMMUNITY_SUP, question, CONFIRM)
    assert "无权" in h.answers()[-1]
    # A resident in the group presses it.
    await h.press(RESIDENT, question, CONFIRM)
    assert "无权" in h.answers()[-1]
    # The author presses a copy forwarded to another chat.
    await h.feed(h.updates.callback(LEADER, data, Sent(BUILDING12_CHAT, question.text,
                                                       question.buttons, [], 999)))
    assert "失效" in h.answers()[-1]
    assert await bindings(h) == before

    # Too late: the question is stale after ten minutes.
    h.clock.advance(timedelta(minutes=11))
    await h.press(LEADER, question, CONFIRM)
    assert "失效" in h.answers()[-1]
    assert await bindings(h) == before

    # Asked again and confirmed by its author: the move is made, and said.
    await h.say(BUILDING_CHAT, LEADER, "/bind BSY-01")
    await h.press(LEADER, h.last(BUILDING_CHAT), CONFIRM)
    assert "已绑定为网格工作群" in h.last(BUILDING_CHAT).text
    after = await bindings(h)
    assert after["BSY-01"] == BUILDING_CHAT and after["BSY-01-03"] is None
    assert await place_of(h, WORK_CHAT) is None
    # Pressed twice: the second press is stale and changes nothing more.
    await h.press(LEADER, question, CONFIRM)
    assert "失效" in h.answers()[-1]


async def test_a_question_goes_stale_when_a_binding_changes_meanwhile(h: Harness) -> None:
    await h.say(-100701, LEADER, "/bind BSY-01-03")  # the building has its group already
    question = h.last(-100701)
    assert "另一个群" in question.text and question.labels == [CONFIRM, CANCEL]
    # Meanwhile the new chat gets bound to another place (no confirmation needed for that).
    await h.say(-100701, LEADER, "/bind BSY-01-03/2")
    assert "已绑定为单元群" in h.last(-100701).text
    await h.press(LEADER, question, CONFIRM)
    assert "失效" in h.answers()[-1]
    found = await bindings(h)
    assert found["BSY-01-03"] == BUILDING_CHAT and found["BSY-01-03/2"] == -100701


async def test_moving_a_place_to_a_new_chat_needs_confirmation_and_frees_the_old_one(
        h: Harness) -> None:
    await h.say(-100702, COMMUNITY_SUP, "/bind BSY-02-12")
    question = h.last(-100702)
    assert "12号楼" in question.text and "另一个群" in question.text
    assert (await bindings(h))["BSY-02-12"] == BUILDING12_CHAT
    await h.press(COMMUNITY_SUP, question, CONFIRM)
    assert "已绑定为楼栋群" in h.last(-100702).text
    assert (await bindings(h))["BSY-02-12"] == -100702
    assert await place_of(h, BUILDING12_CHAT) is None


async def test_free_chat_and_free_place_bind_at_once_and_rebinding_the_same_is_a_no_op(
        h: Harness) -> None:
    await h.say(-100703, LEADER, "/bind BSY-01-03/2")
    assert "已绑定为单元群" in h.last(-100703).text and h.last(-100703).buttons == []
    assert (await bindings(h))["BSY-01-03/2"] == -100703
    await h.say(BUILDING_CHAT, LEADER, "/bind BSY-01-03")
    assert "无需更改" in h.last(BUILDING_CHAT).text
    assert h.last(BUILDING_CHAT).buttons == []


async def test_a_work_chat_does_not_become_a_residents_group_without_confirmation(
        h: Harness) -> None:
    before = await bindings(h)
    await h.say(WORK_CHAT, LEADER, "/bind BSY-01-03")
    question = h.last(WORK_CHAT)
    assert "网格工作群改为居民群" in question.text
    assert await bindings(h) == before
    # The one who asked loses the role before pressing: the press is refused.
    from tests.test_access import reload, swapped_leaders

    await reload(h, swapped_leaders())
    await h.press(LEADER, question, CONFIRM)
    assert "无权" in h.answers()[-1]
    assert await bindings(h) == before
