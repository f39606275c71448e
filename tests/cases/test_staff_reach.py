"""Staff cards never reach a chat of non-staff; unit heads see their unit's cases as
non-staff; `/cases` is paged by the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from bot.cases import lifecycle as cases
from bot.cases.intake import ensure_person
from bot.context import begin
from bot.org.roles import node_by_code
from storage.models import Outbox
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    RESIDENT,
    STREET_SUP,
    UNIT_CHAT,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
)

DESCRIPTION = "单元门禁坏了，联系我 139 8765 4321"


async def escalated(h: Harness) -> int:
    """A case confirmed by its head and escalated by the grid leader to the community."""
    await h.say(UNIT_CHAT, RESIDENT, f"/report {DESCRIPTION}")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要社区协调物业")
    assert (await h.case(case.id)).level == "community"
    return case.id


def mentions_case_card(text: str) -> bool:
    return "单元门禁" in text or "8765" in text


async def test_a_supervisor_who_never_started_the_bot_gets_no_card_in_a_grid_chat(
        h: Harness) -> None:
    h.api.forbid(COMMUNITY_SUP)
    case_id = await escalated(h)
    work = h.api.to(WORK_CHAT)
    assert not any(mentions_case_card(s.text) for s in work), [s.text for s in work]
    assert not any(f":{case_id}:" in str(b.get("callback_data", "")) for s in work
                   for row in s.buttons for b in row), "no case buttons in the work chat"
    # The work chat is told the card waits for the supervisor, with the link to pass on.
    invites = [s.text for s in work if "尚未启动机器人" in s.text]
    assert len(invites) == 1, invites
    assert "社区网格服务管理中心" in invites[0] and f"#{case_id}" in invites[0]
    assert "start=" in invites[0]
    # The card is held for them (gridbot outbox lists it) ...
    async with h.app.sessions() as db:
        held = (await db.scalars(select(Outbox).where(
            Outbox.person_id == COMMUNITY_SUP, Outbox.status == "held"))).all()
    assert held and all(row.fallback_chat_id is None for row in held)
    # ... and arrives privately once they start the bot.
    h.api.allow(COMMUNITY_SUP)
    await h.private(COMMUNITY_SUP, "/start")
    card = h.card(COMMUNITY_SUP, case_id)
    assert "单元门禁" in card.text and "退回下级" in card.labels


async def test_the_street_card_waits_too_and_the_invite_is_sent_once_per_case(
        h: Harness) -> None:
    h.api.forbid(STREET_SUP)
    case_id = await escalated(h)
    await h.press(COMMUNITY_SUP, h.card(COMMUNITY_SUP, case_id), "上报")
    await h.private(COMMUNITY_SUP, "需要街道协调")
    assert (await h.case(case_id)).level == "street"
    # Overdue reminders to the street supervisor while it waits: still no copy, one invite.
    await h.advance(timedelta(days=5))
    work = h.api.to(WORK_CHAT)
    assert not any(mentions_case_card(s.text) for s in work), [s.text for s in work]
    invites = [s.text for s in work if "街道综治中心值班员" in s.text]
    assert len(invites) == 1, invites


async def test_grid_staff_keep_the_work_chat_copy(h: Harness) -> None:
    """The grid's own staff are in its work chat: their cards still fall back there."""
    h.api.forbid(LEADER)
    await h.say(UNIT_CHAT, RESIDENT, f"/report {DESCRIPTION}")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    copy = h.card(WORK_CHAT, case.id)
    assert "受理" in copy.labels and "139 **** 4321" in copy.text


async def test_unit_heads_see_their_units_cases_without_names_or_phone_numbers(
        h: Harness) -> None:
    await h.say(UNIT_CHAT, RESIDENT, f"/report {DESCRIPTION}")
    case = (await h.cases())[-1]
    await h.private(UNIT_HEAD, "/cases")
    listing = h.last(UNIT_HEAD).text
    assert f"#{case.id}" in listing and "8765" not in listing, listing
    await h.private(UNIT_HEAD, f"/case {case.id}")
    detail = h.last(UNIT_HEAD)
    assert f"#{case.id}" in detail.text and "办理记录" in detail.text
    assert "139 **** 4321" in detail.text and "8765" not in detail.text, detail.text
    reporter = await h.case(case.id)
    async with h.app.sessions() as db:
        from storage.models import Person

        person = await db.get(Person, reporter.reporter_id)
        assert person is not None
        name = person.name
    assert name not in detail.text and "姓名仅处置人员可见" in detail.text, detail.text
    assert detail.buttons == []
    # Staff read it all.
    await h.private(LEADER, f"/case {case.id}")
    assert "139 8765 4321" in h.last(LEADER).text and name in h.last(LEADER).text
    # A case the unit head filed on a resident's behalf names the resident to them.
    report = await h.say(UNIT_CHAT, RESIDENT, "楼道堆满杂物")
    await h.say(UNIT_CHAT, UNIT_HEAD, "/report", reply_to=report)
    mine = (await h.cases())[-1]
    assert mine.submitted_by_id == UNIT_HEAD
    await h.private(UNIT_HEAD, f"/case {mine.id}")
    assert name in h.last(UNIT_HEAD).text


@contextmanager
def statements(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = h.app.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def many_open_cases(h: Harness, count: int) -> list[int]:
    """`count` open cases across two buildings, reported a minute apart."""
    ids = []
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        b05, b03 = await node_by_code(db, "BSY-01-05"), await node_by_code(db, "BSY-01-03")
        assert b05 is not None and b03 is not None
        for i in range(count):
            # Different residents: one person may file only a few reports in ten minutes.
            resident = RESIDENT + 1000 + i
            await ensure_person(db, resident, f"居民{i}", tx.now)
            tx.now = h.clock.now() + timedelta(minutes=i)
            case = await cases.report(tx, cases.ReportInput(
                building_id=(b05 if i % 2 else b03).id, reporter_id=resident,
                description=f"第{i}件", category="other"))
            ids.append(case.id)
    return ids


def listed(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"#(\d+)", text)]


async def test_cases_are_paged_in_sql_most_urgent_first(h: Harness) -> None:
    ids = await many_open_cases(h, 35)
    with statements(h) as seen:
        await h.private(LEADER, "/cases")
    first = h.last(LEADER).text
    assert listed(first) == ids[:30], first
    assert "（35 件）" in first and "/cases 2" in first
    # A constant number of statements, not one per case or per place.
    about_cases = [q for q in seen if re.search(r"\b(cases|nodes|categories)\b", q)]
    assert len(about_cases) <= 3, about_cases
    await h.private(LEADER, "/cases 2")
    second = h.last(LEADER).text
    assert listed(second) == ids[30:], second
    assert "最后一页" in second
    # Past the end: the last page; odd arguments: how to use it.
    await h.private(LEADER, "/cases 9")
    assert listed(h.last(LEADER).text) == ids[30:]
    for arg in ("abc", "0", "-1", "1 2"):
        await h.private(LEADER, f"/cases {arg}")
        assert "用法" in h.last(LEADER).text, arg
    # The building head sees only the cases of their building, paged the same way.
    await h.private(HEAD, "/cases")
    assert listed(h.last(HEAD).text) == ids[0::2][:30]
