"""What a merge keeps (issue 20, defect 3), through the real Dispatcher: the main case keeps
the earliest deadline and the highest urgency of the cases merged into it, and a merge never
improves a figure (a case overdue when merged makes the main case overdue, and late when
closed)."""

from __future__ import annotations

from datetime import timedelta

from bot.cases.registry_edit import apply_registry
from bot.ledger.figures import Period, compute
from bot.org.registry import parse_registry
from tests.cases.test_handle import resolve
from tests.cases.test_merge import merge_via_buttons, reported
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING_CHAT,
    HEAD,
    HEAD5,
    LEADER,
    MORNING,
    RESIDENT,
    RESIDENT2,
    SAMPLE,
    Harness,
)


async def test_an_overdue_case_merged_into_a_fresh_one_keeps_it_late(h: Harness) -> None:
    old = await reported(h, BUILDING_CHAT, RESIDENT, HEAD, "3号楼门口路灯不亮")
    assert old.deadline_at == MORNING + timedelta(hours=72)
    await h.advance(timedelta(hours=73))  # overdue (escalated only after 24 h more)
    fresh = await reported(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "5号楼门口那盏路灯坏了")
    assert fresh.deadline_at > h.clock.now()
    await merge_via_buttons(h, LEADER, old.id, fresh.id)
    done = h.last(LEADER).text
    assert f"已将诉求 #{old.id} 合并到 #{fresh.id}" in done
    assert "时限" in done and "已超期" in done

    main = await h.case(fresh.id)
    assert main.deadline_at == old.deadline_at
    # The sweep derives the deadline again: it stays where the merge held it.
    await h.advance(timedelta(minutes=30))
    assert (await h.case(fresh.id)).deadline_at == old.deadline_at
    # Its red light comes on the leader's next list, an hour after the last (issue 21).
    await h.advance(timedelta(minutes=30))
    assert h.reminded(LEADER, "超期", fresh.id) == 1

    await h.press(LEADER, h.card(LEADER, fresh.id), "受理")
    await resolve(h, LEADER, fresh.id, "已更换路灯灯泡")
    period = Period.month_of(MORNING, "Asia/Shanghai")
    async with h.app.sessions() as db:
        figures = await compute(db, period)
    assert figures.closed == 1 and figures.due == 1
    assert (figures.closed_on_time, figures.closed_late) == (0, 1)
    assert figures.on_time_rate == 0


async def test_an_urgent_case_merged_into_a_routine_one_keeps_urgency_and_sla(
        h: Harness) -> None:
    routine = await reported(h, BUILDING_CHAT, RESIDENT, HEAD, "3号楼门口路灯不亮")
    assert (routine.urgent, routine.deadline_at) == (False, MORNING + timedelta(hours=72))
    await h.say(BUILDING5_CHAT, RESIDENT2, "/report 5号楼楼道里有很大的煤气味")
    urgent = (await h.cases())[-1]
    assert urgent.category == "fire" and urgent.urgent and urgent.status == "open"
    assert urgent.deadline_at == MORNING + timedelta(hours=4)
    await merge_via_buttons(h, LEADER, urgent.id, routine.id)
    assert "紧急" in h.last(LEADER).text

    main = await h.case(routine.id)
    assert main.urgent and main.deadline_at == urgent.deadline_at
    # A registry load (urgency follows the category) keeps the urgency merged in.
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), h.clock)
    main = await h.case(routine.id)
    assert main.urgent and main.deadline_at == urgent.deadline_at
    # Four hours on, the main case is red and its handler is told so.
    await h.advance(timedelta(hours=4, minutes=5))
    assert (await h.case(routine.id)).deadline_at == urgent.deadline_at
    assert h.reminded(LEADER, "超期", routine.id) == 1


async def test_a_routine_case_merged_into_an_urgent_one_changes_nothing(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 3号楼楼道里有很大的煤气味")
    urgent = (await h.cases())[-1]
    assert urgent.urgent
    await h.advance(timedelta(hours=1))
    routine = await reported(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "5号楼门口那盏路灯坏了")
    await merge_via_buttons(h, LEADER, routine.id, urgent.id)
    assert "时限" not in h.last(LEADER).text
    main = await h.case(urgent.id)
    assert main.urgent and main.deadline_at == urgent.deadline_at
    assert main.deadline_offset_seconds == 0
