"""Cards with a few primary actions (issue 21, point 1): each staff card shows the two to four
actions that fit its status and 更多, which redraws the same message with the rest and ← 返回.

Nothing anyone could do before became unreachable: `card_actions_today.json` holds, for every
status × level × role, the actions the cards offered before the split, and both pages together
must still offer exactly those.
"""

from __future__ import annotations

from pathlib import Path

from bot.cases import notify
from bot.cases.buttons import MAX_BYTES, Action, CaseButton
from bot.context import Tx
from bot.org.roles import Actor, Lineage
from storage.models import Case
from tests.cases.card_matrix import actions, matrix, today
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    MEMBER,
    POLICE,
    RESIDENT,
    STRANGER,
    UNIT_CHAT,
    WORK_CHAT,
    Harness,
    make_harness,
)

PAGES = {Action.MORE.name, Action.BACK.name}
MORE, BACK = "更多", "← 返回"


async def _pages(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> list[str]:
    """Both pages of the card `actor` is shown, checked for their shape on the way."""
    shown = await notify.buttons_for(tx, actor, case, lin)
    rest = await notify.buttons_for(tx, actor, case, lin, more=True)
    first, other = actions(shown), actions(rest)
    for row in shown + rest:
        for b in row:
            data = str(b["callback_data"])
            assert len(data.encode()) <= MAX_BYTES
            btn = CaseButton.unpack(data)
            assert btn is not None and btn.rev == case.rev, data
    if Action.MORE.name not in first:
        # A card of four actions or fewer shows them all, and has no other page.
        assert len(first) <= notify.MAX_SHOWN and shown == rest, (first, other)
        return first
    assert first[-1] == Action.MORE.name and other[-1] == Action.BACK.name, (first, other)
    assert 2 <= len(first) <= 4, first  # two to three primary actions, and 更多
    assert not set(first) & set(other) - PAGES, (first, other)  # nothing on both pages
    return sorted(a for a in first + other if a not in PAGES)


async def test_every_action_a_role_had_is_on_one_of_the_two_pages(h: Harness) -> None:
    found = await matrix(h, _pages)
    assert found == today()
    # And the matrix is what the issue is about: the leader's new case had ten and more.
    assert len(today()["open/grid/located grid_leader"]) == 11


async def test_a_new_case_shows_accept_assign_resolve_and_more_redraws_the_same_card(
        h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    card = h.card(LEADER, case.id)
    assert card.labels == ["受理", "交楼栋长", "办结", MORE]
    sent = len(h.api.to(LEADER))
    await h.press_data(LEADER, card.button_data(MORE), card)
    assert len(h.api.to(LEADER)) == sent, "更多 edits the card, it sends nothing new"
    assert h.card(LEADER, case.id) is card
    assert card.labels == ["上报", "改类别", "申请延期", "挂账", "吹哨", "合并", "拆分", BACK]
    assert [len(row) for row in card.buttons] == [3, 3, 1, 1]
    await h.press_data(LEADER, card.button_data(BACK), card)
    assert card.labels == ["受理", "交楼栋长", "办结", MORE]
    assert h.answers()[-2:] == ["", ""]  # no alert for turning a page
    assert await h.events(case.id) == ["report", "confirm"], "turning a page changes nothing"

    # 受理: the card is redrawn for an accepted case, with its own primary actions.
    await h.press(LEADER, card, "受理")
    assert card.labels == ["办结", "上报", "交楼栋长", MORE]
    assert await h.all_labels(LEADER, card) == [
        "办结", "上报", "交楼栋长", "改类别", "申请延期", "挂账", "吹哨", "合并", "拆分"]
    assert card.labels == ["办结", "上报", "交楼栋长", MORE], "← 返回 went back"


async def test_an_action_behind_more_is_pressed_from_the_other_page(h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    card = h.card(LEADER, case.id)
    await h.press_data(LEADER, card.button_data(MORE), card)
    await h.press_data(LEADER, card.button_data("改类别"), card)
    assert "请选择新的类别" in h.answers()[-1], h.answers()[-1]
    await h.press(LEADER, card, "其他")
    assert (await h.case(case.id)).category == "other"
    # The card comes back with its primary actions (and the new rev).
    assert card.labels == ["受理", "交楼栋长", "办结", MORE]


async def test_a_stale_cards_more_says_so_and_changes_nothing(h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    # /case draws the card too; 受理 on the card itself then leaves that one behind.
    card = h.card(LEADER, case.id)
    await h.private(LEADER, f"/case {case.id}")
    theirs = h.last(LEADER)
    assert theirs is not card and theirs.labels == ["受理", "交楼栋长", "办结", MORE]
    await h.press(LEADER, card, "受理")
    await h.press_data(LEADER, theirs.button_data(MORE), theirs)
    assert "已失效" in h.answers()[-1], h.answers()[-1]
    assert theirs.labels == ["受理", "交楼栋长", "办结", MORE]


async def test_more_from_someone_who_may_do_nothing_is_refused(h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    card = h.card(LEADER, case.id)
    for who in (RESIDENT, STRANGER, POLICE):
        await h.press_data(who, card.button_data(MORE), card)
        assert "无权" in h.answers()[-1], (who, h.answers()[-1])
    assert card.labels == ["受理", "交楼栋长", "办结", MORE]


async def test_in_the_grid_chat_more_shows_what_the_presser_may_use(h: Harness) -> None:
    h.api.forbid(LEADER)
    h.api.forbid(MEMBER)
    await h.say(UNIT_CHAT, RESIDENT, "/report 单元门禁坏了")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    copy = h.card(WORK_CHAT, case.id)
    assert copy.labels == ["受理", "交楼栋长", "办结", MORE]
    # A member may not ask above (延期, 挂账) nor call a department in (吹哨).
    await h.press(MEMBER, copy, MORE)
    assert copy.labels == ["上报", "改类别", "合并", "拆分", BACK]
    # The leader may.
    await h.press(LEADER, copy, BACK)
    await h.press(LEADER, copy, MORE)
    assert copy.labels == ["上报", "改类别", "申请延期", "挂账", "吹哨", "合并", "拆分", BACK]
    # A resident in the grid chat may do nothing: refused, the card as it was.
    await h.press(RESIDENT, copy, BACK)
    assert "无权" in h.answers()[-1] and BACK in copy.labels
    # And a button of the other page works there too.
    await h.press(LEADER, copy, "受理")
    assert (await h.case(case.id)).status == "accepted"
    assert copy.labels == ["办结", "上报", "交楼栋长", MORE]


async def test_the_supervisors_card_leads_with_accept_resolve_and_send_back(
        h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要社区协调物业")
    card = h.card(COMMUNITY_SUP, case.id)
    assert card.labels == ["受理", "办结", "退回下级", MORE]
    assert await h.all_labels(COMMUNITY_SUP, card) == [
        "受理", "办结", "退回下级", "交楼栋长", "上报", "改类别", "申请延期", "挂账", "吹哨",
        "合并", "拆分"]
    # /case draws the same card.
    await h.private(COMMUNITY_SUP, f"/case {case.id}")
    assert h.last(COMMUNITY_SUP).labels == ["受理", "办结", "退回下级", MORE]


async def test_the_heads_and_the_departments_cards_are_short_and_need_no_more(
        h: Harness) -> None:
    case = await h.report_in_group()
    verify = h.card(HEAD, case.id)
    assert verify.labels == ["✅ 属实", "❌ 不属实", "改类别"]
    await h.press(HEAD, verify, "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "交楼栋长")
    assert h.card(HEAD, case.id).labels == ["收到", "已完成"]
    await h.press(HEAD, h.card(HEAD, case.id), "已完成")
    # 吹哨 sits behind 更多 on the leader's card; the department's card has two answers.
    await h.press(LEADER, h.card(LEADER, case.id), "吹哨")
    await h.press(LEADER, h.last(LEADER), "莲花派出所")
    await h.private(LEADER, "请派人到现场查看")
    assert h.last(POLICE).labels == ["🙋 报到", "✅ 已处理"]


async def test_english_cards_say_more_and_back(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, locale="en")
    try:
        case = await h.report_in_group()
        await h.press(HEAD, h.card(HEAD, case.id), "✅ Accurate")
        card = h.card(LEADER, case.id)
        assert card.labels[-1] == "More"
        await h.press(LEADER, card, "More")
        assert card.labels[-1] == "← Back" and "Change category" in card.labels
    finally:
        await h.app.close()
