"""改类别 (issue 19, defects 8 and 9), through the real Dispatcher with a moved clock.

Defect 8: a category change was an unapproved extension. It moved the deadline by any
amount, after it had passed too: a case resolved 11 hours late counted 按期, while 申请延期
is refused past the deadline. Now a category change never moves a deadline that has passed,
never moves one later (more time is what 延期 is for, approved above), and never into the
past; the history says what moved.

Defect 9: `urgent` was copied from the category at the report and never cleared. Now it
follows the current category, both ways, with its quiet-hours exemption and the （紧急） mark.

The sample registry's "other" is 72 h, "dispute" 7 d, "security" 24 h, "fire" 4 h and urgent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.cases.buttons import Action, CaseButton
from bot.ledger.figures import Period, compute
from storage.models import Case
from tests.harness import COMMUNITY_SUP, HEAD, LEADER, MORNING, Harness

TZ = "Asia/Shanghai"
HOUR = timedelta(hours=1)


async def confirmed(h: Harness, text: str = "隔壁天天半夜打麻将") -> Case:
    case = await h.report_in_group(text)  # "other", Monday 10:00: due Thursday 10:00
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def refile(h: Harness, user: int, case_id: int, code: str) -> str:
    """改类别 on the person's latest card of the case; returns the answer they were shown."""
    await h.press(user, h.card(user, case_id), "改类别")
    case = await h.case(case_id)
    await h.press_data(user, CaseButton(Action.SET_CATEGORY, case_id, case.rev, code).pack())
    assert (await h.case(case_id)).category == code
    return h.answers()[-1]


async def history(h: Harness, user: int, case_id: int) -> str:
    await h.private(user, f"/case {case_id}")
    return h.last(user).text


def count(h: Harness, chat: int, word: str) -> int:
    """Reminder lists to `chat` with a line saying `word`."""
    return h.reminded(chat, word)


# --- defect 8 ------------------------------------------------------------------------------


async def test_a_deadline_that_has_passed_does_not_move(h: Harness) -> None:
    """The issue's case: an hour past the deadline, re-filed as a 7-day category, resolved
    11 hours late. The deadline stays Thursday 10:00 and the result counts 超期."""
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.advance(timedelta(hours=73))  # Thursday 11:00: overdue since an hour
    assert count(h, LEADER, "超期") == 1
    answer = await refile(h, LEADER, case.id, "dispute")
    moved = await h.case(case.id)
    assert moved.deadline_at == case.deadline_at
    assert "11-26 10:00" in answer and "已过" in answer, answer
    detail = await history(h, LEADER, case.id)
    assert "办结时限：11-26 10:00" in detail
    assert "其他 → 矛盾纠纷" in detail and "已过办结时限 11-26 10:00，时限不变" in detail
    await h.private(LEADER, "/cases")
    assert f"🔴 #{case.id}" in h.last(LEADER).text
    # 申请延期 is still refused: no button past the deadline.
    assert "申请延期" not in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await h.advance(timedelta(hours=10))  # Thursday 21:00: 11 hours late
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已调解")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    done = await h.case(case.id)
    assert done.resolved_at is not None and done.resolved_at - done.deadline_at == 11 * HOUR
    async with h.app.sessions() as db:
        fig = await compute(db, Period.parse("2026-11", TZ), None, now=h.clock.now())
    assert (fig.closed, fig.closed_on_time) == (1, 0)


async def test_a_longer_category_keeps_the_deadline_more_time_is_an_extension(
        h: Harness) -> None:
    """Before the deadline, a category with a longer SLA does not lengthen it: the handler
    is told the deadline stays and that more time is asked for with 申请延期, which the
    level above approves (and counts against max_extensions)."""
    case = await confirmed(h)
    await h.advance(2 * HOUR)
    answer = await refile(h, LEADER, case.id, "dispute")
    held = await h.case(case.id)
    assert held.deadline_at == case.deadline_at  # Thursday 10:00, not Monday + 7 days
    assert "仍为 11-26 10:00" in answer and "申请延期" in answer, answer
    card = h.card(LEADER, case.id)
    assert "类别：矛盾纠纷" in card.text and "办结时限：11-26 10:00" in card.text
    assert "申请延期" in await h.all_labels(LEADER, card)
    detail = await history(h, LEADER, case.id)
    assert "其他 → 矛盾纠纷" in detail
    assert "办结时限仍为 11-26 10:00（按新类别为 11-30 10:00，延长须申请延期）" in detail
    # The time is asked for and approved above, as any extension.
    await h.press(LEADER, card, "申请延期")
    await h.press(LEADER, h.last(LEADER), "3 天")
    await h.private(LEADER, "需要约双方当面调解")
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    extended = await h.case(case.id)
    assert extended.deadline_at == case.deadline_at + timedelta(days=3)
    assert extended.extension_count == 1
    # The sweep derives it again and keeps it.
    await h.advance(HOUR)
    assert (await h.case(case.id)).deadline_at == case.deadline_at + timedelta(days=3)


async def test_a_shorter_category_brings_the_deadline_forward(h: Harness) -> None:
    case = await confirmed(h)
    await h.advance(2 * HOUR)
    await refile(h, LEADER, case.id, "security")  # 24 h: Tuesday 10:00
    moved = await h.case(case.id)
    assert moved.deadline_at == case.reported_at + timedelta(hours=24)
    detail = await history(h, LEADER, case.id)
    assert "其他 → 治安隐患" in detail and "办结时限 11-26 10:00 → 11-24 10:00" in detail
    await h.advance(HOUR)
    assert (await h.case(case.id)).deadline_at == moved.deadline_at


async def test_a_deadline_is_never_moved_into_the_past(h: Harness) -> None:
    """Tuesday 12:00, re-filed as a 24 h category: by it the case was due Tuesday 10:00, but
    nobody was late before the category said so: it is due now, and overdue from now."""
    case = await confirmed(h)
    await h.advance(timedelta(hours=26))
    now = h.clock.now()
    await refile(h, LEADER, case.id, "security")
    moved = await h.case(case.id)
    assert moved.deadline_at == now
    detail = await history(h, LEADER, case.id)
    assert "办结时限 11-26 10:00 → 11-24 12:00" in detail
    await h.advance(timedelta(minutes=1))
    assert count(h, LEADER, "超期") == 1
    assert (await h.case(case.id)).deadline_at == now


# --- defect 9 ------------------------------------------------------------------------------

EVENING = MORNING + timedelta(hours=8, minutes=1)  # Monday 18:01 in Shanghai


async def test_refiling_an_urgent_report_as_other_clears_its_urgency(h: Harness) -> None:
    """The issue's case: 电动车 filed the report as 消防安全 (urgent, 4 h) at 18:01; the grid
    leader re-files it as 其他. It is no longer urgent: no （紧急） on its cards, and its
    red light (the deadline stays 22:01, see defect 8) waits out the quiet hours."""
    h.clock.set(EVENING)
    case = await h.report_in_group("楼道里有人给电动车充电")
    assert (case.category, case.urgent, case.status) == ("fire", True, "open")
    assert "（紧急）" in h.card(LEADER, case.id).text
    await h.advance(timedelta(minutes=9))
    await refile(h, LEADER, case.id, "other")
    refiled = await h.case(case.id)
    assert refiled.urgent is False
    assert refiled.deadline_at == case.deadline_at  # 22:01
    card = h.card(LEADER, case.id)
    assert "类别：其他" in card.text and "（紧急）" not in card.text
    detail = await history(h, LEADER, case.id)
    assert "类别：其他（紧急）" not in detail and "消防安全 → 其他" in detail
    await h.private(LEADER, "/cases")
    assert "（紧急）" not in h.last(LEADER).text
    # 21:01, 0.75 of the time: due soon, outside the quiet hours.
    await h.advance(timedelta(hours=2, minutes=51))
    assert count(h, LEADER, "临期") == 1
    # 22:01 to 06:59: no red light in the quiet hours.
    overdue_before = count(h, LEADER, "超期")
    await h.advance(timedelta(hours=1, minutes=1))
    await h.advance(timedelta(hours=8, minutes=57))
    assert count(h, LEADER, "超期") == overdue_before
    await h.advance(timedelta(minutes=2))  # 07:00
    assert count(h, LEADER, "超期") == overdue_before + 1


async def test_refiling_into_an_urgent_category_makes_it_urgent(h: Harness) -> None:
    """The other way: a case re-filed as 消防安全 at 22:30 is urgent at once; its deadline
    comes forward (to now: it cannot be in the past) and its red light does not wait for
    the morning."""
    case = await confirmed(h)
    assert (case.category, case.urgent) == ("other", False)
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.advance(timedelta(hours=12, minutes=30))  # Monday 22:30: quiet hours
    await refile(h, LEADER, case.id, "fire")
    urgent = await h.case(case.id)
    assert urgent.urgent is True and urgent.deadline_at == h.clock.now()
    assert "类别：消防安全（紧急）" in h.card(LEADER, case.id).text
    await h.advance(timedelta(minutes=1))
    assert count(h, LEADER, "超期") == 1
    # And back: re-filed as 其他 again, it is not urgent any more.
    await refile(h, LEADER, case.id, "other")
    assert (await h.case(case.id)).urgent is False


async def test_a_verifying_report_refiled_as_urgent_skips_verification(h: Harness) -> None:
    report_time = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    case = await h.report_in_group("楼道灯坏了")
    assert case.reported_at == report_time and case.status == "verifying"
    await refile(h, HEAD, case.id, "fire")
    urgent = await h.case(case.id)
    assert (urgent.urgent, urgent.status, urgent.verified) == (True, "open", "confirmed")
    assert urgent.deadline_at == report_time + timedelta(hours=4)
    assert "🚨" in h.card(LEADER, case.id).text
