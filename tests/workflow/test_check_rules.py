"""核查 rules of issue 19, through the real Dispatcher with a moved clock.

- A check never waits on nobody (defect 11): a building head removed from the registry while
  a case waits for their check (`check_within: null`) hands the check to whoever may act
  instead, or the case goes on to the rating with a note in its history.
- Whoever resolved never checks (defect 15): a grid member who is also the building head does
  not pass the check of a result they recorded; the check goes one level up (the grid leader),
  and where there is nobody the case goes on to the rating and the handlers are told so.
- A check that times out in the quiet hours asks the reporter for a rating in the morning
  (defect 19).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.cases.buttons import Action, CaseButton
from bot.cases.registry_edit import apply_registry
from bot.org.registry import parse_registry
from storage.models import Case
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    MEMBER,
    RESIDENT,
    SAMPLE,
    Harness,
)

RESULT = "已更换破裂的水管，恢复供水"
HEAD_LINE = "                head: {id: 930103, name: 楼栋长丙}\n"
NO_WAIT = ("check_within: 1d", "check_within: null")
NEW_HEAD = 930199


async def load(h: Harness, *edits: tuple[str, str]) -> None:
    """The sample registry with `edits` (old, new) applied, loaded as `gridbot registry load`
    would while the bot runs."""
    text = SAMPLE.read_text("utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def housing_case(h: Harness, head: int = HEAD) -> Case:
    """A report in the building's group, set to 房屋水电 (checked) and confirmed by `head`."""
    case = await h.report_in_group("3单元一楼地面全是水")
    await h.press_data(head, f"c1:cs:{case.id}:{case.rev}:housing")
    await h.press(head, h.card(head, case.id), "✅ 属实")
    case = await h.case(case.id)
    assert (case.category, case.status) == ("housing", "open")
    return case


async def resolve(h: Harness, case_id: int, by: int = LEADER) -> None:
    """办结 from the case as `/case` shows it to `by`, with a result and no photo."""
    await h.private(by, f"/case {case_id}")
    await h.press(by, h.last(by), "办结")
    await h.private(by, RESULT)
    await h.press(by, h.last(by), "提交办结")


def mentions(h: Harness, chat: int, case_id: int) -> list[str]:
    return [t for t in h.texts(chat) if f"#{case_id}" in t]


def rating_asked(h: Harness) -> bool:
    return any(RESULT in t for t in h.texts(RESIDENT) + h.texts(BUILDING_CHAT))


async def detail(h: Harness, case_id: int) -> str:
    await h.private(LEADER, f"/case {case_id}")
    return h.last(LEADER).text


# --- defect 11: a case can wait on nobody -----------------------------------------------------


async def test_a_check_whose_head_left_the_registry_goes_on_to_the_rating(h: Harness) -> None:
    await load(h, NO_WAIT)
    case = await housing_case(h)
    await resolve(h, case.id)
    assert (await h.case(case.id)).status == "checking"
    card = h.card(HEAD, case.id)
    assert not rating_asked(h)
    # The building head leaves the registry (the building has none now).
    await load(h, NO_WAIT, (HEAD_LINE, ""))
    await h.advance(timedelta(minutes=1))
    after = await h.case(case.id)
    assert (after.status, after.checked) == ("resolved", "skipped")
    assert (await h.events(case.id))[-1] == "check_skip"
    assert rating_asked(h)
    # The grid is told why nobody checked, and /case says it in the history.
    assert any("无人核查" in t for t in mentions(h, LEADER, case.id))
    assert "无人核查，转回访评价：本楼栋已无楼栋长" in await detail(h, case.id)
    # The old card is stale; the sweep moved it on once.
    await h.press(HEAD, card, "✅ 通过")
    assert "失效" in h.answers()[-1] or "无权" in h.answers()[-1]
    await h.advance(timedelta(hours=1))
    assert (await h.events(case.id)).count("check_skip") == 1
    assert (await h.case(case.id)).status == "resolved"


async def test_a_new_head_gets_the_check_of_the_one_who_left(h: Harness) -> None:
    await load(h, NO_WAIT)
    case = await housing_case(h)
    await resolve(h, case.id)
    old_card = h.card(HEAD, case.id)
    await load(h, NO_WAIT, (HEAD_LINE, HEAD_LINE.replace("930103, name: 楼栋长丙",
                                                         f"{NEW_HEAD}, name: 楼栋长新")))
    await h.advance(timedelta(minutes=1))
    card = h.card(NEW_HEAD, case.id)
    assert "待核查诉求" in card.text and RESULT in card.text
    assert card.labels == ["✅ 通过", "❌ 不通过"]
    # Once: a later sweep sends no second card.
    await h.advance(timedelta(minutes=1))
    assert len(mentions(h, NEW_HEAD, case.id)) == 1
    # The one who left may not check any more; the new head may.
    await h.press(HEAD, old_card, "✅ 通过")
    assert "无权" in h.answers()[-1]
    assert (await h.case(case.id)).status == "checking"
    await h.press(NEW_HEAD, card, "✅ 通过")
    passed = await h.case(case.id)
    assert (passed.status, passed.checked) == ("resolved", "passed")
    assert rating_asked(h)


# --- defect 15: whoever resolved never checks -------------------------------------------------


async def test_a_member_who_is_the_head_does_not_check_their_own_result(h: Harness) -> None:
    # 网格员乙 is also the building head of 3号楼.
    await load(h, (HEAD_LINE, HEAD_LINE.replace("930103, name: 楼栋长丙",
                                                "920002, name: 网格员乙")))
    case = await housing_case(h, head=MEMBER)
    await resolve(h, case.id, by=MEMBER)
    checking = await h.case(case.id)
    assert (checking.status, checking.checked) == ("checking", "pending")
    # The check goes one level up, to the grid leader, and the card says why.
    assert not any("待核查诉求" in t for t in mentions(h, MEMBER, case.id))
    card = h.card(LEADER, case.id)
    assert "待核查诉求" in card.text and RESULT in card.text
    assert "办结人" in card.text and "网格员乙" in card.text
    assert card.labels == ["✅ 通过", "❌ 不通过"]
    # The member may not pass (or fail) the result they recorded.
    for action in (Action.CHECK_PASS, Action.CHECK_FAIL):
        await h.press_data(MEMBER, CaseButton(action, case.id, checking.rev).pack())
        assert "办结人" in h.answers()[-1], h.answers()[-1]
    assert (await h.case(case.id)).status == "checking"
    # /case shows 通过 / 不通过 to whoever may check (the grid leader standing in), never to
    # the resolver.
    await h.private(MEMBER, f"/case {case.id}")
    assert "✅ 通过" not in h.last(MEMBER).labels
    await h.private(LEADER, f"/case {case.id}")
    assert [b for b in h.last(LEADER).labels if "通过" in b] == ["✅ 通过", "❌ 不通过"]
    await h.press(LEADER, card, "✅ 通过")
    passed = await h.case(case.id)
    assert (passed.status, passed.checked) == ("resolved", "passed")
    assert rating_asked(h)


async def test_where_nobody_may_check_the_case_goes_on_and_the_handler_is_told(
        h: Harness) -> None:
    # 网格长甲 is also the building head of 3号楼, and resolves the case himself.
    await load(h, (HEAD_LINE, HEAD_LINE.replace("930103, name: 楼栋长丙",
                                                "920001, name: 网格长甲")))
    case = await housing_case(h, head=LEADER)
    await resolve(h, case.id)
    done = await h.case(case.id)
    assert (done.status, done.checked) == ("resolved", "nobody")
    assert (await h.events(case.id))[-2:] == ["resolve_check", "check_skip"]
    assert rating_asked(h)
    told = [t for t in mentions(h, LEADER, case.id) if "无人核查" in t]
    assert len(told) == 1 and "办结人" in told[0]
    assert not any("待核查诉求" in t for t in mentions(h, LEADER, case.id))
    text = await detail(h, case.id)
    assert "无人核查，转回访评价" in text and "核查：无人可核查" in text


# --- defect 19: the quiet hours -------------------------------------------------------------


async def test_a_check_timing_out_at_night_asks_for_the_rating_in_the_morning(
        h: Harness) -> None:
    # Resolved at 10:00; the check is due by 23:00, in the quiet hours (22:00-07:00).
    await load(h, ("check_within: 1d", "check_within: 13h"))
    case = await housing_case(h)
    await resolve(h, case.id)
    await h.advance(timedelta(hours=13, minutes=1))
    assert not rating_asked(h)
    assert not any("未在时限内现场核查" in t for t in mentions(h, LEADER, case.id))
    # 07:00 the next morning (Asia/Shanghai): on to the rating, unchecked.
    await h.advance(timedelta(hours=7, minutes=59))
    morning = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # 07:00 on 11-24 in Shanghai
    late = await h.case(case.id)
    assert (late.status, late.checked) == ("resolved", "unchecked")
    assert late.checked_at is not None and late.checked_at >= morning
    assert rating_asked(h)
    assert any("未在时限内现场核查" in t for t in mentions(h, LEADER, case.id))
    # The reporter's rating window counts from the morning.
    await h.advance(timedelta(days=3) - timedelta(minutes=2))
    assert (await h.case(case.id)).status == "resolved"
