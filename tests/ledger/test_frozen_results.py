"""Freeze what was judged (issue 19, defect 2).

A registry edit of a category's SLA (or of the working calendar) re-derived the deadline of
cases already resolved or waiting for their check: 按期 became 超期 after the fact, twin cases
resolved in the same minute ended up one on time and one late depending on whether the
resident rated before the edit, and past months' figures changed. Now the deadline a result
is judged against is frozen once the result is recorded; an edit retimes only cases without
a result, never moves a deadline that has passed, and never moves one into the past; so no
edit changes a figure of a period that has ended. Through the real Dispatcher and sweep.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bot.cases.registry_edit import apply_registry
from bot.cases.status import OPEN_STATUSES
from bot.ledger.figures import Period, breakdown, compute
from bot.org.registry import parse_registry
from storage.models import Case
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING_CHAT,
    HEAD,
    HEAD5,
    LEADER,
    RESIDENT,
    RESIDENT2,
    SAMPLE,
    Harness,
)
from tests.ledger.test_definitions import _ids, add_case, local, simulate

TZ = "Asia/Shanghai"
HOUR = timedelta(hours=1)

# The sample registry's categories, as its lines spell their SLAs.
OTHER = ("name: {zh_CN: 其他, en: Other},                    sla: 72h}",
         "name: {zh_CN: 其他, en: Other},                    sla: {}}")
HOUSING = ("sla: 72h, check: true}", "sla: {}, check: true}")
FACILITY = ("en: Public facilities},   sla: 72h}", "en: Public facilities},   sla: {}}")
SANITATION = ("en: Sanitation},         sla: 48h}", "en: Sanitation},         sla: {}}")
SECURITY = ("en: Public security},      sla: 24h}", "en: Public security},      sla: {}}")


def registry(*slas: tuple[tuple[str, str], str], calendar: str = "") -> str:
    """The sample registry with some categories' SLAs changed, and a calendar section."""
    text = SAMPLE.read_text("utf-8")
    for (old, new), sla in slas:
        assert old in text, old
        text = text.replace(old, new.replace("{}", sla))
    return text + calendar


async def load(h: Harness, text: str) -> None:
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def settle(h: Harness) -> None:
    """Sweep until no timer step is left due now (the sweep takes 200 cases at a time)."""
    for _ in range(50):
        if not await h.app.sweep():
            break
    await h.deliver()


async def report(h: Harness, chat: int, user: int, head: int, text: str) -> Case:
    case = await h.report_in_group(text, user=user, chat=chat)
    await h.press(head, h.card(head, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    return await h.case(case.id)


async def resolve(h: Harness, user: int, case_id: int, result: str = "已处理") -> None:
    await h.press(user, h.card(user, case_id), "办结")
    await h.private(user, result)
    await h.press(user, h.last(user), "提交办结")


# --- the twins --------------------------------------------------------------------------------


async def test_twin_results_stay_judged_by_the_deadline_they_were_recorded_against(
        h: Harness) -> None:
    """Two "other" cases (72 h) reported and resolved in the same minutes, 50 hours in; one
    resident rates before the SLA is cut to 24 h, the other after. A third, 房屋水电 (checked
    on site), waits for its check during the edit. All three stay on time, judged by the
    deadline they were resolved against, and so do the month's figures."""
    rated = await report(h, BUILDING_CHAT, RESIDENT, HEAD, "隔壁天天半夜打麻将")
    waiting = await report(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "隔壁天天半夜打麻将")
    checking = await report(h, BUILDING_CHAT, RESIDENT, HEAD, "楼上漏水，天花板在滴水")
    assert (rated.category, waiting.category, checking.category) == ("other", "other",
                                                                     "housing")
    await h.advance(timedelta(hours=50))
    for case in (rated, waiting, checking):
        await resolve(h, LEADER, case.id)
    assert (await h.case(checking.id)).status == "checking"
    await h.press(RESIDENT, h.last(RESIDENT), "满意")
    assert (await h.case(rated.id)).status == "closed"
    assert (await h.case(waiting.id)).status == "resolved"

    await load(h, registry((OTHER, "24h"), (HOUSING, "24h")))
    await settle(h)
    await h.advance(HOUR)
    await h.press(RESIDENT2, h.last(RESIDENT2), "满意")
    await h.press(HEAD, h.card(HEAD, checking.id), "✅ 通过")
    await h.advance(HOUR)
    for before in (rated, waiting, checking):
        after = await h.case(before.id)
        assert after.deadline_at == before.deadline_at, after.id
        assert after.resolved_at is not None and after.resolved_at <= after.deadline_at
    async with h.app.sessions() as db:
        fig = await compute(db, Period.parse("2026-11", TZ), None, now=h.clock.now())
    assert (fig.closed, fig.closed_on_time, fig.closed_late) == (3, 3, 0)


async def test_an_edit_retimes_open_cases_but_not_a_deadline_that_has_passed(
        h: Harness) -> None:
    """Cases without a result follow the registry, except a deadline that has passed (it
    was judged overdue, and an ended month may have counted it so) and into the past (by the
    new SLA a case would have been late before anyone said so: it is due now)."""
    overdue = await report(h, BUILDING_CHAT, RESIDENT, HEAD, "隔壁天天半夜打麻将")  # other, 72 h
    tight = await report(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "小区门口有人打架")  # 24 h
    assert tight.category == "security"
    await h.advance(timedelta(hours=60))
    running = await report(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "隔壁天天半夜打麻将")
    await h.advance(timedelta(hours=20))  # 80 h: the first two are overdue
    now = h.clock.now()
    await load(h, registry((OTHER, "96h"), (SECURITY, "12h")))
    await settle(h)
    assert (await h.case(overdue.id)).deadline_at == overdue.deadline_at
    assert (await h.case(running.id)).deadline_at == running.reported_at + 96 * HOUR
    assert (await h.case(tight.id)).deadline_at == tight.deadline_at  # passed at 24 h
    cut = await report(h, BUILDING_CHAT, RESIDENT, HEAD, "楼下有陌生人撬门")
    assert cut.category == "security"
    await h.advance(timedelta(hours=6))
    await load(h, registry((OTHER, "96h"), (SECURITY, "4h")))
    await settle(h)
    assert (await h.case(cut.id)).deadline_at == h.clock.now()
    assert now < h.clock.now()


# --- a generated year -----------------------------------------------------------------------

# The generated year runs to Wednesday 2026-11-18 10:05 in Shanghai (tests/ledger/
# test_definitions.py's NOW: its simulation stops there), from a year before.
NOW = local(11, 18, 10, 5)
YEAR_START = local(11, 18, 10, 5, year=2025)
GENERATED = 420
ENDED = ["2025-11", "2025-12", *(f"2026-{m:02d}" for m in range(1, 11))]


async def generate_year(h: Harness, seed: int = 19) -> set[str]:
    """A year of cases lived at random (test_definitions.simulate), written as the domain
    leaves them; then every case not closed is woken, and the sweep catches up to now.
    Returns the statuses the year was generated with."""
    rng = random.Random(seed)
    statuses: set[str] = set()
    async with h.app.sessions() as db:
        _, sla = await _ids(db)
        span = int((NOW - YEAR_START).total_seconds() // 60)
        for _ in range(GENERATED):
            reported = YEAR_START + timedelta(minutes=rng.randrange(span))
            s = simulate(rng, sla, reported)
            row = dict(s.row, status=s.status)
            statuses.add(s.status)
            if s.status not in ("verifying", "open", "rejected"):
                row.setdefault("accepted_by_id", LEADER)
            await add_case(db, s.building, row.pop("category"), row.pop("reported_at"),
                           s.events, **row)
        await db.execute(update(Case).where(Case.status.in_(list(OPEN_STATUSES)))
                         .values(next_check_at=NOW))
        await db.commit()
    await settle(h)
    return statuses


async def ended_figures(h: Harness) -> dict[str, Any]:
    """Every figure of every ended month: for everything, by grid and by category."""
    out: dict[str, Any] = {}
    async with h.app.sessions() as db:
        now = h.clock.now()
        for label in ENDED:
            period = Period.parse(label, TZ)
            out[label] = vars(await compute(db, period, None, now=now))
            for by in ("grid", "category"):
                for code, _, fig in await breakdown(db, period, None, by, now=now):
                    out[f"{label} {by} {code}"] = vars(fig)
    return out


@pytest.mark.slow
async def test_no_registry_edit_changes_a_figure_of_an_ended_month(h: Harness) -> None:
    """A generated year (to 11-18), its eleven and a half ended months' figures; then the
    SLAs are edited (shorter, longer, into working time), the calendar is given holidays,
    and the sample registry is loaded back, the sweep and the clock running between the
    edits. Every figure of every ended month is what it was."""
    h.clock.set(NOW)
    statuses = await generate_year(h)
    assert {"resolved", "checking", "closed", "accepted", "open", "suspended"} <= statuses
    before = await ended_figures(h)
    assert sum(before[m]["due"] for m in ENDED) > 200
    assert sum(before[m]["overdue_at_end"] for m in ENDED) > 0

    slas = ((OTHER, "24h"), (SANITATION, "7d"), (FACILITY, "3wd"), (SECURITY, "8wh"),
            (HOUSING, "12h"))
    await load(h, registry(*slas))
    await settle(h)
    assert await ended_figures(h) == before
    await h.advance(timedelta(days=2))  # ratings and checks time out, cases are escalated
    await settle(h)
    assert await ended_figures(h) == before

    holidays = '\ncalendar:\n  holidays: ["2026-11-20..2026-11-27"]\n  workdays: []\n'
    await load(h, registry(*slas, calendar=holidays))
    await settle(h)
    assert await ended_figures(h) == before
    await h.advance(timedelta(days=2))
    await settle(h)
    assert await ended_figures(h) == before

    await load(h, SAMPLE.read_text("utf-8"))
    await settle(h)
    await h.advance(timedelta(days=1))
    assert await ended_figures(h) == before
