"""One timer model for a case (issue 6): the clock starts at the report and again at a
reopening, the deadline follows the current category from the clock start, and every timer
step is derived from them and from the steps already taken. Through the real Dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from bot.cases import notify, views
from bot.cases.buttons import Action, CaseButton
from bot.cases.registry_edit import apply_registry
from bot.context import begin
from bot.org.registry import parse_registry
from bot.org.roles import lineage_of, load_actor
from storage.models import Case, CaseTimerStep
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    Harness,
)


async def load_registry(h: Harness, old: str, new: str) -> None:
    text = SAMPLE.read_text("utf-8")
    assert old in text
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text.replace(old, new)), h.clock)


async def confirmed(h: Harness, text: str = "楼道灯坏了") -> Case:
    case = await h.report_in_group(text)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def change_category(h: Harness, user: int, case_id: int, code: str) -> None:
    await h.press(user, h.card(user, case_id), "改类别")
    case = await h.case(case_id)
    await h.press_data(user, CaseButton(Action.SET_CATEGORY, case_id, case.rev, code).pack())
    assert (await h.case(case_id)).category == code


def count(h: Harness, chat: int, word: str) -> int:
    """Reminder lists to `chat` with a line saying `word` (not /cases legends)."""
    return h.reminded(chat, word)


async def test_category_change_after_reopening_counts_from_the_reopening(h: Harness) -> None:
    case = await confirmed(h)  # "other": 72 h
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.advance(timedelta(hours=60))
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已更换灯泡")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    await h.advance(timedelta(hours=60))  # day 5: the reporter is not satisfied
    await h.press(RESIDENT, h.last(RESIDENT), "不满意")
    await h.private(RESIDENT, "灯还是不亮")
    reopened = await h.case(case.id)
    assert reopened.status == "open" and reopened.round == 2
    reopened_at = h.clock.now()
    overdue_before = count(h, LEADER, "超期")

    # Moved to another 72 h category: 72 h from the reopening, not from the report.
    await change_category(h, LEADER, case.id, "facility")
    moved = await h.case(case.id)
    assert moved.deadline_at == reopened_at + timedelta(hours=72)
    await h.advance(timedelta(minutes=1))
    moved = await h.case(case.id)
    assert moved.level == "grid" and moved.status == "open"
    assert count(h, LEADER, "超期") == overdue_before
    assert "auto_escalate" not in await h.events(case.id)
    assert h.texts(COMMUNITY_SUP) == []
    await h.private(LEADER, "/cases")
    assert f"🟢 #{case.id}" in h.last(LEADER).text
    # And its own reminders come on the new clock: due soon at 0.75 of 72 h after reopening.
    await h.advance(timedelta(hours=54))
    assert "临期提醒" in h.last(LEADER).text


async def test_overdue_case_moved_to_longer_category_stays_overdue(h: Harness) -> None:
    """A deadline that has passed does not move with the category (issue 19, defect 8):
    the case stays red and its overdue alerts go on (tests/cases/test_category_change.py)."""
    case = await confirmed(h)  # "other": 72 h
    reported = case.reported_at
    await h.advance(timedelta(hours=54))
    await h.advance(timedelta(hours=19))  # overdue since an hour
    assert count(h, LEADER, "超期") == 1
    soon_before = count(h, LEADER, "临期提醒")

    await change_category(h, LEADER, case.id, "dispute")  # 7 days
    moved = await h.case(case.id)
    assert moved.deadline_at == reported + timedelta(hours=72)
    await h.private(LEADER, "/cases")
    assert f"🔴 #{case.id}" in h.last(LEADER).text
    await h.advance(timedelta(hours=3))  # the next alert, 4 h after the deadline
    # Folded (listed today already, issue 21); the next morning's list carries it.
    assert count(h, LEADER, "临期提醒") == soon_before and count(h, LEADER, "超期") == 1
    await h.advance(timedelta(hours=17))  # 07:00 local
    assert count(h, LEADER, "超期") == 2
    assert "11-26 10:00" in h.reminder_lists(LEADER)[-1].text
    assert (await h.case(case.id)).deadline_at == reported + timedelta(hours=72)


async def test_without_verify_window_an_ignored_report_still_has_its_deadline(
        h: Harness) -> None:
    await load_registry(h, "verify_within: 2h", "verify_within: null")
    case = await h.report_in_group()  # "other": 72 h, the head never answers
    assert case.status == "verifying"
    assert case.next_check_at is not None
    await h.advance(timedelta(hours=54))  # 0.75 of the time to the deadline
    assert "待您核实" in h.last(HEAD).text
    assert h.texts(LEADER) == []
    await h.advance(timedelta(hours=18))  # the deadline
    case = await h.case(case.id)
    assert case.status == "open" and case.verified == "unverified"
    card = h.card(LEADER, case.id)
    assert "未经楼栋长核实" in card.text and "未核实" in card.text
    assert "超过核实时限" in h.last(HEAD).text
    assert count(h, LEADER, "超期") == 1  # the red light, as for any case
    await h.private(LEADER, "/cases")
    assert f"🔴 #{case.id}" in h.last(LEADER).text
    await h.advance(timedelta(hours=24))
    case = await h.case(case.id)
    assert case.level == "community"
    assert h.reminded(COMMUNITY_SUP, "超期未办结，自动上报", case.id) == 1
    await h.advance(timedelta(hours=24))
    assert (await h.case(case.id)).level == "street"
    assert h.reminded(STREET_SUP, "自动上报", case.id) == 1


async def test_verify_window_longer_than_the_deadline_ends_at_the_deadline(
        h: Harness) -> None:
    await load_registry(h, "verify_within: 2h", "verify_within: 5d")
    case = await h.report_in_group()
    await h.advance(timedelta(hours=72))
    case = await h.case(case.id)
    assert case.status == "open" and case.verified == "unverified"
    assert h.card(LEADER, case.id) and count(h, LEADER, "超期") == 1


async def test_steps_are_records_and_a_reopening_starts_them_again(h: Harness) -> None:
    case = await confirmed(h)
    await h.advance(timedelta(hours=54))
    await h.advance(timedelta(hours=18))
    async with h.app.sessions() as db:
        steps = (await db.execute(select(CaseTimerStep.round, CaseTimerStep.step).where(
            CaseTimerStep.case_id == case.id).order_by(CaseTimerStep.id))).all()
    assert [tuple(s) for s in steps] == [(1, "due_soon"), (1, "overdue")]
    # Repeated sweeps at the same moment take nothing again.
    await h.app.sweep()
    await h.app.sweep()
    await h.deliver()
    assert count(h, LEADER, "超期") == 1 and count(h, LEADER, "临期提醒") == 1


async def test_times_people_read_are_in_the_registry_timezone(h: Harness) -> None:
    await load_registry(h, "timezone: Asia/Shanghai", "timezone: Europe/Berlin")
    # 02:00 UTC is 03:00 in Berlin (10:00 in Shanghai); the deadline is 72 h later.
    case = await h.report_in_group()
    ack = [t for t in h.texts(BUILDING_CHAT) if f"#{case.id}" in t][-1]
    assert "11-26 03:00" in ack and "10:00" not in ack
    card = h.card(HEAD, case.id).text
    assert "11-23 03:00" in card and "11-26 03:00" in card and "10:00" not in card
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER).text
    assert "11-23 03:00" in detail and "10:00" not in detail


@contextmanager
def statements(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []

    def count_it(*args: Any) -> None:
        seen.append(args[2])

    engine = h.app.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count_it)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count_it)


async def card_cost(h: Harness, case_id: int) -> int:
    """Statements to build and queue the handler card of a case, in a fresh session."""
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        case = await db.get(Case, case_id)
        assert case is not None
        lin = await lineage_of(db, case.building_id, case.unit_id)
        with statements(h) as seen:
            await notify.handler_card(tx, case, lin, "new")
        await db.rollback()
    return len(seen)


async def detail_cost(h: Harness, case_id: int) -> int:
    """Statements for `/case N` as the street supervisor sees it, in a fresh session."""
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        actor = await load_actor(db, STREET_SUP)
        with statements(h) as seen:
            await views.case_detail(tx, actor, case_id)
        await db.rollback()
    return len(seen)


async def album(h: Harness, group: str, photos: int) -> Case:
    await h.say(BUILDING_CHAT, RESIDENT, photo=f"{group}-0", caption="/report 外墙脱落",
                media_group_id=group)
    for i in range(1, photos):
        await h.say(BUILDING_CHAT, RESIDENT, photo=f"{group}-{i}", media_group_id=group)
    await h.advance(timedelta(seconds=5))
    return (await h.cases())[-1]


async def test_a_card_costs_the_same_few_statements_whatever_the_case_holds(
        h: Harness) -> None:
    one = await album(h, "g1", 1)
    ten = await album(h, "g10", 10)
    assert one.id != ten.id
    assert await card_cost(h, one.id) == await card_cost(h, ten.id) <= 10

    # A history with many people in it costs no query per person.
    short = await confirmed(h, "楼道堆物")
    long = await confirmed(h, "电梯异响")
    await h.press(LEADER, h.card(LEADER, long.id), "上报")
    await h.private(LEADER, "需要物业和社区协调")
    await h.press(COMMUNITY_SUP, h.card(COMMUNITY_SUP, long.id), "上报")
    await h.private(COMMUNITY_SUP, "涉及多个社区")
    await h.press(STREET_SUP, h.card(STREET_SUP, long.id), "退回下级")
    await h.private(STREET_SUP, "社区先行处置")
    assert len(await h.events(long.id)) > len(await h.events(short.id)) + 2
    assert await detail_cost(h, short.id) == await detail_cost(h, long.id)


async def test_open_cases_follow_a_registry_load_that_changes_their_sla(h: Harness) -> None:
    case = await confirmed(h, "快递柜不够用")  # no keyword matches: "other", 72 h
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.advance(timedelta(hours=10))
    assert count(h, LEADER, "超期") == 0
    # The district shortens "other" to 8 h: the case is overdue now, not in 62 hours.
    await load_registry(h, "{code: other,     name: {zh_CN: 其他, en: Other},                    "
                           "sla: 72h}",
                        "{code: other,     name: {zh_CN: 其他, en: Other},                    "
                        "sla: 8h}")
    moved = await h.case(case.id)
    # Due now: by 8 h it was due two hours ago, but no deadline is moved into the past (issue
    # 19, defect 2: an ended period's figures must not change).
    assert moved.deadline_at == h.clock.now()
    await h.advance(timedelta(seconds=1))
    assert count(h, LEADER, "超期") == 1
    await h.private(LEADER, "/cases")
    assert f"🔴 #{case.id}" in h.last(LEADER).text


async def test_open_cases_follow_a_registry_load_that_changes_the_policy(h: Harness) -> None:
    case = await confirmed(h)  # "other": 72 h, due-soon at 0.75 (54 h)
    await h.advance(timedelta(hours=10))
    before = (await h.case(case.id)).next_check_at
    await load_registry(h, "remind_at: 0.75", "remind_at: 0.1")
    await h.advance(timedelta(seconds=1))  # 0.1 of 72 h has passed: due soon at once
    assert count(h, LEADER, "临期") == 1
    assert (await h.case(case.id)).next_check_at != before
