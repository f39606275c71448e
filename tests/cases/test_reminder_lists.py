"""Reminders gathered per person (issue 21, points 2 and 4): the reminders that fall due for one
person in one sweep go as one list, each case with its light, deadline and a button opening
its card; a list whose cases moved on before its turn is rewritten or dropped with the
reason in its outbox row; what a person is owed is never dropped.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bench import reminder_day
from bot.ops import outbox_admin
from bot.ops.terminal import local_zone
from bot.telegram.delivery import DROPPED
from storage.models import Case, Outbox, Reminder
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    HEAD5,
    LEADER,
    MEMBER,
    RESIDENT,
    SAMPLE,
    WORK_CHAT,
    Harness,
)
from tests.workflow.test_suspension import ask_suspend

# Three 市政设施 cases (72 h) reported at the same moment: due soon together.
REPORTS = ((BUILDING_CHAT, HEAD, "3号楼楼道灯坏了"), (BUILDING5_CHAT, HEAD5, "5号楼门口路灯不亮"),
           (BUILDING_CHAT, HEAD, "3号楼单元门门禁坏了"))


async def no_duplicates(h: Harness) -> None:
    """Same category, same building, same day: here three problems, not 是同一问题."""
    from bot.cases.registry_edit import apply_registry
    from bot.org.registry import parse_registry

    text = SAMPLE.read_text("utf-8").replace("duplicate_window: 3d", "duplicate_window: null")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def three_cases(h: Harness) -> list[Case]:
    await no_duplicates(h)
    cases = []
    for n, (chat, head, text) in enumerate(REPORTS):
        await h.say(chat, RESIDENT + n, f"/report {text}")
        case = (await h.cases())[-1]
        await h.press(head, h.card(head, case.id), "✅ 属实")
        cases.append(await h.case(case.id))
    assert [c.status for c in cases] == ["open"] * 3
    return cases


async def test_one_sweeps_reminders_go_as_one_list_that_opens_each_card(h: Harness) -> None:
    cases = await three_cases(h)
    before = len(h.api.to(LEADER))
    await h.advance(timedelta(hours=54))  # 0.75 of 72 h: all three due soon in one sweep
    new = h.api.to(LEADER)[before:]
    assert len(new) == 1, [s.text for s in new]
    listing = new[0]
    lines = listing.text.splitlines()
    assert "3 件诉求" in lines[0]
    for case in cases:
        line = next(ln for ln in lines if f"#{case.id} " in ln)
        assert line.startswith("🟡") and "临期提醒" in line and "11-26 10:00 到期" in line
    assert listing.labels == [f"🟡 #{c.id}" for c in cases]

    # The number opens the case's card privately, with what the leader may do now.
    await h.press(LEADER, listing, f"🟡 #{cases[1].id}")
    card = h.last(LEADER)
    assert f"#{cases[1].id}" in card.text and "5号楼" in card.text
    assert "办结" in card.labels
    assert not any(h.answers()[-1:])  # no toast needed in the leader's own chat


async def test_a_later_reminder_waits_for_the_hour_an_urgent_one_does_not(h: Harness) -> None:
    await no_duplicates(h)
    await h.say(BUILDING_CHAT, RESIDENT, "/report 3号楼楼道灯坏了")
    first = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, first.id), "✅ 属实")
    await h.advance(timedelta(minutes=20))
    await h.say(BUILDING5_CHAT, RESIDENT + 1, "/report 5号楼门口路灯不亮")
    second = (await h.cases())[-1]
    await h.press(HEAD5, h.card(HEAD5, second.id), "✅ 属实")
    await h.advance(timedelta(hours=54) - timedelta(minutes=20))  # the first: due soon
    assert h.reminded(LEADER, "临期提醒", first.id) == 1
    await h.advance(timedelta(minutes=25))  # the second's moment: within the hour, it waits
    assert h.reminded(LEADER, "临期提醒", second.id) == 0
    await h.advance(timedelta(minutes=35))  # an hour after the first list
    assert h.reminded(LEADER, "临期提醒", second.id) == 1
    assert len(h.reminder_lists(LEADER)) == 2

    # An urgent case's reminder does not wait for the hour.
    await h.say(BUILDING_CHAT, RESIDENT + 2, "/report 3号楼消防通道被电动车堵死了")
    urgent = (await h.cases())[-1]
    assert urgent.urgent
    await h.advance(timedelta(hours=3, minutes=1))  # 0.75 of 4 h
    assert h.reminded(LEADER, "临期提醒", urgent.id) == 1


async def test_a_red_light_whose_case_was_suspended_meanwhile_is_dropped_and_says_why(
        h: Harness) -> None:
    """The issue's case: the red light's turn came a second after the 挂账 was approved."""
    await h.say(BUILDING_CHAT, RESIDENT, "/report 小区门口道路塌陷，需要重修")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    case = await h.case(case.id)
    await h.advance(case.deadline_at - h.clock.now() - timedelta(hours=1))
    await ask_suspend(h, case.id)
    lists = len(h.reminder_lists(LEADER))
    # The deadline passes: the sweep writes the red light, not yet sent ...
    h.clock.advance(timedelta(hours=1, minutes=1))
    await h.app.sweep()
    async with h.app.sessions() as db:
        row = await db.scalar(select(Outbox).where(Outbox.kind == "reminders",
                                                   Outbox.status == "pending"))
        assert row is not None and f"#{case.id}" in row.text and "超期" in row.text
    # ... when the community approves the 挂账; then the sender's turn comes.
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    assert (await h.case(case.id)).status == "suspended"
    assert len(h.reminder_lists(LEADER)) == lists
    async with h.app.sessions() as db:
        dropped = await db.get(Outbox, row.id)
        assert dropped is not None and dropped.status == DROPPED
        assert dropped.last_error == f"stale: #{case.id} is suspended"
        reminder = await db.scalar(select(Reminder).where(Reminder.outbox_id == row.id))
        assert reminder is not None and reminder.status == "dropped"
        # `gridbot outbox --status dropped` lists it, with why.
        found = await outbox_admin.listing(db, status=DROPPED)
        shown = outbox_admin.render(found, await local_zone(db))
    assert "1 dropped as stale" in shown and f"stale: #{case.id} is suspended" in shown


async def test_a_list_is_rewritten_without_a_case_that_moved_on(h: Harness) -> None:
    cases = await three_cases(h)
    h.clock.advance(timedelta(hours=54))
    await h.app.sweep()  # one list of three, pending
    # The leader resolves the second before the list goes out (their answers are direct).
    card = h.card(LEADER, cases[1].id)
    await h.feed(h.updates.callback(LEADER, card.button_data("办结"), card), deliver=False)
    await h.feed(h.updates.message(LEADER, LEADER, "已修好，灯亮了"), deliver=False)
    await h.feed(h.updates.callback(LEADER, h.last(LEADER).button_data("提交办结"),
                                    h.last(LEADER)), deliver=False)
    assert (await h.case(cases[1].id)).status in ("resolved", "checking")
    await h.deliver()
    listing = h.reminder_lists(LEADER)[-1]
    assert f"#{cases[0].id} " in listing.text and f"#{cases[2].id} " in listing.text
    assert f"#{cases[1].id} " not in listing.text and "2 件诉求" in listing.text
    assert listing.labels == [f"🟡 #{cases[0].id}", f"🟡 #{cases[2].id}"]
    async with h.app.sessions() as db:
        gone = await db.scalar(select(Reminder).where(Reminder.case_id == cases[1].id,
                                                      Reminder.person_id == LEADER))
    assert gone is not None and gone.status == "dropped"
    assert gone.reason == f"#{cases[1].id} is {(await h.case(cases[1].id)).status}"
    # The reporter's notice of the result is owed: it went, whatever came after.
    assert any("办理结果" in t or "已办结" in t for t in h.texts(RESIDENT + 1))


async def test_a_case_stale_before_its_list_is_never_listed(h: Harness) -> None:
    cases = await three_cases(h)
    # Night: the reminders wait for 07:00; the leader resolves one at 06:00.
    h.clock.advance(timedelta(hours=54 + 12))  # 11-26 04:00 local, after the due-soon moment
    await h.app.sweep()
    assert h.reminder_lists(LEADER) == []
    await h.press(LEADER, h.card(LEADER, cases[0].id), "办结")
    await h.private(LEADER, "已修好")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    await h.advance(timedelta(hours=3, minutes=1))  # 07:01
    listing = h.reminder_lists(LEADER)[-1]
    assert f"#{cases[0].id} " not in listing.text and "2 件诉求" in listing.text


@pytest.mark.slow
async def test_a_leaders_day_with_30_open_cases_keeps_the_goal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The goal of issue 21 (bench/reminder_day.py, docs/benchmarks.md): 30 open cases, 10
    overdue when the day begins, swept every 15 minutes: at most one list per sweep, at most
    12 in the day, every case due or overdue in the day on at least one."""
    r = await reminder_day.play_day(tmp_path, step_minutes=15)
    assert (r.open_cases, r.overdue_at_start) == (30, 10)
    assert r.most_in_one_sweep == 1 and 1 <= r.lists <= 12
    assert r.due_in_day >= 20 and r.missing == []


async def test_a_list_in_the_work_chat_opens_cards_privately_never_in_the_group(
        h: Harness) -> None:
    """The leader never started the bot: their list goes to the grid's work chat, as cards
    do. Its numbers send the card privately to whoever presses, or say to start the bot."""
    h.api.forbid(LEADER)
    cases = await three_cases(h)
    await h.advance(timedelta(hours=54))
    [listing] = h.reminder_lists(WORK_CHAT)
    assert "3 件诉求" in listing.text
    before = len(h.api.to(WORK_CHAT))
    await h.feed(h.updates.callback(LEADER, listing.button_data(f"🟡 #{cases[0].id}"),
                                    listing, chat_id=WORK_CHAT))
    assert "私聊机器人并点「开始」" in h.answers()[-1]
    await h.feed(h.updates.callback(MEMBER, listing.button_data(f"🟡 #{cases[0].id}"),
                                    listing, chat_id=WORK_CHAT))
    assert h.answers()[-1] == f"已私信发送 #{cases[0].id} 的详情。"
    assert f"#{cases[0].id}" in h.last(MEMBER).text
    assert len(h.api.to(WORK_CHAT)) == before  # nothing posted to the group
