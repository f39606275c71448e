"""吹哨报到 rules of issue 19, through the real Dispatcher with a moved clock.

- A changed `whistle_ack_within` reaches departments already called and not yet
  acknowledged (defect 12): their acknowledgement is due by the policy as it is now.
- A department that acknowledged but never reports done is reminded once, with the case's
  own next reminder after its 报到 (defect 17).
- Where the street has no supervisors, a department that does not acknowledge goes to the
  level above that has someone, and where nobody is above, the handler and the caller are told
  (defect 18).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.cases.registry_edit import apply_registry
from bot.org.registry import parse_registry
from storage.models import Case, Whistle
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    MARKET,
    POLICE,
    PROPERTY,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    Harness,
)

ASK = "请派民警到场处置占道经营"
STREET_SUPS = "    supervisors:\n      - {id: 900001, name: 街道综治中心值班员}\n"
COMMUNITY_SUPS = "        supervisors:\n          - {id: 910001, name: 社区网格服务管理中心}\n"


async def load(h: Harness, *edits: tuple[str, str]) -> None:
    """The sample registry with `edits` (old, new) applied, loaded as `gridbot registry load`
    would while the bot runs."""
    text = SAMPLE.read_text("utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def confirmed(h: Harness) -> Case:
    """A report in the building group, confirmed by the head and accepted by the leader."""
    case = await h.report_in_group("楼下夜市占道经营，影响通行")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    return await h.case(case.id)


async def blow(h: Harness, case_id: int, department: str = "莲花派出所",
               ask: str = ASK) -> None:
    case = await h.case(case_id)
    await h.press_data(LEADER, f"c1:wh:{case.id}:{case.rev}")
    await h.press(LEADER, h.last(LEADER), department)
    await h.private(LEADER, ask)


async def whistles_of(h: Harness, case_id: int) -> list[Whistle]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(Whistle).where(Whistle.case_id == case_id)
                                      .order_by(Whistle.id))).all())


def late(h: Harness, chat: int) -> list[str]:
    return [t for t in h.texts(chat) if "超时未报到" in t]


def reminders(h: Harness, chat: int, case_id: int) -> list[str]:
    return [t for t in h.texts(chat) if f"#{case_id}" in t and "尚未反馈处理情况" in t]


# --- defect 12: a changed whistle_ack_within ------------------------------------------------


async def test_a_shorter_ack_window_reaches_a_department_already_called(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case.id)
    [called] = await whistles_of(h, case.id)
    h.clock.advance(timedelta(minutes=5))
    await load(h, ("whistle_ack_within: 30m", "whistle_ack_within: 10m"))
    await h.advance(timedelta(minutes=4))
    assert late(h, STREET_SUP) == []
    [whistle] = await whistles_of(h, case.id)
    assert whistle.ack_due_at == called.called_at + timedelta(minutes=10)
    assert (await h.case(case.id)).whistle_due_at == whistle.ack_due_at
    await h.advance(timedelta(minutes=2))
    assert (await h.events(case.id)).count("whistle_escalate") == 1
    assert len(late(h, STREET_SUP)) == 1


async def test_a_longer_or_no_ack_window_reaches_a_department_already_called(
        h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case.id)
    await blow(h, case.id, department="莲花市场监管所", ask="请核查无证经营")
    police, market = await whistles_of(h, case.id)
    await load(h, ("whistle_ack_within: 30m", "whistle_ack_within: 2h"))
    await h.advance(timedelta(minutes=31))
    assert "whistle_escalate" not in await h.events(case.id)
    police, market = await whistles_of(h, case.id)
    assert police.ack_due_at == police.called_at + timedelta(hours=2)
    # The market acknowledges; then the timer is switched off for the police still called.
    await h.press(MARKET, h.last(MARKET), "🙋 报到")
    await load(h, ("whistle_ack_within: 30m", "whistle_ack_within: null"))
    await h.advance(timedelta(hours=2))
    assert "whistle_escalate" not in await h.events(case.id)
    police, market = await whistles_of(h, case.id)
    assert police.ack_due_at is None
    # What was judged stays: the market's acknowledgement keeps the due time it had.
    assert market.ack_due_at == market.called_at + timedelta(hours=2)
    assert (await h.case(case.id)).whistle_due_at is None
    assert late(h, STREET_SUP) == []


# --- defect 17: acknowledged, never done ----------------------------------------------------


async def test_acknowledged_but_not_done_is_reminded_once(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case.id)
    await h.press(POLICE, h.last(POLICE), "🙋 报到")
    await blow(h, case.id, department="柏树郢物业公司", ask="请配合清理")
    await h.press(PROPERTY, h.last(PROPERTY), "🙋 报到")
    await h.press(PROPERTY, h.last(PROPERTY), "✅ 已处理")
    await h.private(PROPERTY, "已清理")
    await h.press(PROPERTY, h.last(PROPERTY), "提交")
    case = await h.case(case.id)
    # The case's due-soon moment (0.75 of the way to its deadline): the police are reminded.
    soon = case.clock_started_at + (case.deadline_at - case.clock_started_at) * 0.75
    assert h.app.ctx.clock.now() < soon
    await h.advance(soon - h.clock.now() - timedelta(minutes=1))
    assert reminders(h, POLICE, case.id) == []
    await h.advance(timedelta(minutes=2))  # 16:01 in Shanghai, outside the quiet hours
    [reminder] = reminders(h, POLICE, case.id)
    assert ASK in reminder
    sent = next(s for s in h.api.to(POLICE) if s.text == reminder)
    assert sent.labels == ["✅ 已处理"]
    # A department that reported done is not reminded.
    assert reminders(h, PROPERTY, case.id) == []
    # Once: not again at the deadline, nor with the overdue alerts.
    await h.advance(case.deadline_at - h.clock.now() + timedelta(hours=9))
    assert len(reminders(h, POLICE, case.id)) == 1
    # 已处理 from the reminder works.
    await h.press(POLICE, sent, "✅ 已处理")
    await h.private(POLICE, "已劝离")
    await h.press(POLICE, h.last(POLICE), "提交")
    assert [w.status for w in await whistles_of(h, case.id)] == ["done", "done"]
    assert (await h.case(case.id)).whistle_acked_at is None


async def test_a_department_acknowledging_late_is_reminded_at_the_deadline(
        h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case.id, department="莲花市场监管所", ask="请核查无证经营")
    soon = case.clock_started_at + (case.deadline_at - case.clock_started_at) * 0.75
    await h.advance(soon - h.clock.now() + timedelta(hours=9))
    await h.press(MARKET, h.last(MARKET), "🙋 报到")
    await h.advance(timedelta(hours=1))
    assert reminders(h, MARKET, case.id) == []
    await h.advance(case.deadline_at - h.clock.now() + timedelta(hours=9))
    assert len(reminders(h, MARKET, case.id)) == 1
    await h.advance(timedelta(days=1))
    assert len(reminders(h, MARKET, case.id)) == 1


async def test_resolving_ends_the_reminder(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case.id)
    await h.press(POLICE, h.last(POLICE), "🙋 报到")
    assert (await h.case(case.id)).whistle_acked_at is not None
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "摊位已清理")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    assert (await h.case(case.id)).whistle_acked_at is None
    await h.advance(timedelta(days=10))
    assert reminders(h, POLICE, case.id) == []


# --- defect 18: nobody at the street --------------------------------------------------------


async def test_without_street_supervisors_the_community_is_told(h: Harness) -> None:
    await load(h, (STREET_SUPS, ""))
    case = await confirmed(h)
    await blow(h, case.id)
    # The department's card promises no street that is not there.
    card = next(t for t in h.texts(POLICE) if "吹哨报到" in t)
    assert "逾期将报上级" in card and "街道" not in card
    await h.advance(timedelta(minutes=31))
    assert (await h.events(case.id)).count("whistle_escalate") == 1
    [told] = late(h, COMMUNITY_SUP)
    assert "莲花派出所" in told and ASK in told
    assert late(h, STREET_SUP) == []
    await h.private(LEADER, f"/case {case.id}")
    assert "报社区" in h.last(LEADER).text
    await h.advance(timedelta(hours=1))
    assert len(late(h, COMMUNITY_SUP)) == 1


async def test_with_nobody_above_the_handler_and_caller_are_told(h: Harness) -> None:
    await load(h, (STREET_SUPS, ""), (COMMUNITY_SUPS, ""))
    case = await confirmed(h)
    await blow(h, case.id)
    await h.advance(timedelta(minutes=31))
    assert (await h.events(case.id)).count("whistle_escalate") == 1
    told = late(h, LEADER)
    assert len(told) == 1 and "莲花派出所" in told[0] and "无人" in told[0]
    assert late(h, COMMUNITY_SUP) == [] and late(h, STREET_SUP) == []
    await h.advance(timedelta(hours=1))
    assert len(late(h, LEADER)) == 1
    # The resident hears nothing of it.
    assert late(h, RESIDENT) == [] and late(h, BUILDING_CHAT) == []
