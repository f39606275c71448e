"""The working calendar (issue 10): SLAs in working hours (`8wh`) and working days (`2wd`)
skip nights, weekends, the State Council's public holidays and count its 调休 make-up
working days; a district adds its own days; a year nobody knows counts weekends only and is
reported. Real 2026 dates in Asia/Shanghai, then through the real Dispatcher."""

from __future__ import annotations

import logging
import time as walltime
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.app import warn_calendar
from bot.cases.deadlines import (
    Phase,
    StepName,
    calendar_warning,
    deadline_of,
    due_soon_at,
    light,
    pending_steps,
)
from bot.cases.registry_edit import apply_registry
from bot.context import begin
from bot.org.durations import format_sla, parse_sla
from bot.org.policy import Policy
from bot.org.registry import parse_registry
from bot.org.workcal import WorkCalendar, default_calendar
from storage.models import Case
from tests.harness import HEAD, LEADER, SAMPLE, Harness, make_harness

SH = ZoneInfo("Asia/Shanghai")
CAL = default_calendar()


def at(y: int, mo: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    """A Shanghai wall-clock moment, as the UTC instant the database holds."""
    return datetime(y, mo, d, hh, mm, ss, tzinfo=SH).astimezone(UTC)


def wd(start: datetime, days: int, cal: WorkCalendar = CAL) -> datetime:
    return cal.add_working_days(start, days)


def wh(start: datetime, hours: float, cal: WorkCalendar = CAL) -> datetime:
    return cal.add_working(start, hours * 3600)


# --- which days work ------------------------------------------------------------------------


@pytest.mark.parametrize("day, working", [
    (date(2026, 11, 20), True),   # a Friday
    (date(2026, 11, 21), False),  # Saturday
    (date(2026, 10, 1), False),   # National Day, a Thursday
    (date(2026, 10, 8), True),    # the first working day after it
    (date(2026, 10, 10), True),   # 调休: a Saturday worked for National Day
    (date(2026, 9, 20), True),    # 调休: a Sunday worked
    (date(2026, 2, 14), True),    # 调休 before the Spring Festival, a Saturday
    (date(2026, 2, 23), False),   # Spring Festival holiday, a Monday
    (date(2026, 2, 24), True),
])
def test_the_official_schedule(day: date, working: bool) -> None:
    assert CAL.is_working_day(day) is working


def test_without_the_official_schedule_only_weekends_are_off() -> None:
    cal = WorkCalendar.from_json({"official": False})
    assert cal.is_working_day(date(2026, 10, 1)) and not cal.is_working_day(date(2026, 10, 10))
    assert not cal.known(2026)


def test_calendars_are_cached_per_stored_value() -> None:
    data = {"hours": [["09:00", "17:00"]], "weekend": [7], "holidays": ["2026-12-24"]}
    assert WorkCalendar.from_json(data) is WorkCalendar.from_json(dict(data))
    assert WorkCalendar.from_json(None) is default_calendar()


# --- working days ---------------------------------------------------------------------------


def test_working_days_across_a_weekend() -> None:
    # The day of the report does not count; due at the end of the N-th working day after.
    assert wd(at(2026, 11, 23, 10), 2) == at(2026, 11, 25, 17, 30)  # Monday → Wednesday
    assert wd(at(2026, 11, 20, 10), 1) == at(2026, 11, 23, 17, 30)  # Friday → Monday
    assert wd(at(2026, 11, 20, 20), 1) == at(2026, 11, 23, 17, 30)  # Friday night too
    assert wd(at(2026, 11, 21, 10), 1) == at(2026, 11, 23, 17, 30)  # and Saturday
    assert wd(at(2026, 11, 20, 10), 2) == at(2026, 11, 24, 17, 30)


def test_working_days_across_public_holidays() -> None:
    # National Day: off 10-01..10-07; 2wd from 09-30 are 10-08 and 10-09.
    assert wd(at(2026, 9, 30, 10), 2) == at(2026, 10, 9, 17, 30)
    # Spring Festival: off 02-15..02-23, the Saturday before worked.
    assert wd(at(2026, 2, 13, 10), 1) == at(2026, 2, 14, 17, 30)
    assert wd(at(2026, 2, 13, 10), 2) == at(2026, 2, 24, 17, 30)


def test_working_days_count_a_make_up_weekend_day() -> None:
    assert wd(at(2026, 9, 18, 10), 1) == at(2026, 9, 20, 17, 30)  # Sunday 09-20 is worked
    assert wd(at(2026, 10, 8, 10), 2) == at(2026, 10, 10, 17, 30)  # Saturday 10-10 is worked


def test_a_district_adds_its_own_holiday_and_workday() -> None:
    cal = WorkCalendar.from_json({"holidays": ["2026-11-23"], "workdays": ["2026-10-03"]})
    assert wd(at(2026, 11, 20, 10), 1, cal) == at(2026, 11, 24, 17, 30)
    # A registry workday beats the official holiday: Saturday 10-03 worked.
    assert wd(at(2026, 9, 30, 10), 1, cal) == at(2026, 10, 3, 17, 30)


# --- working hours --------------------------------------------------------------------------


def test_working_hours_skip_lunch_nights_and_weekends() -> None:
    assert wh(at(2026, 11, 23, 9), 2) == at(2026, 11, 23, 11)
    assert wh(at(2026, 11, 23, 11), 2) == at(2026, 11, 23, 15)  # over lunch
    assert wh(at(2026, 11, 23, 10), 5.5) == at(2026, 11, 23, 17, 30)  # to the end
    # Friday 16:00: 1.5 h on Friday, 3.5 h on Monday morning, 3 h after lunch.
    assert wh(at(2026, 11, 20, 16), 8) == at(2026, 11, 23, 17)
    # Across National Day: 3.5 h on 09-30, then 10-08.
    assert wh(at(2026, 9, 30, 14), 8) == at(2026, 10, 8, 15)


@pytest.mark.parametrize("start, due", [
    (at(2026, 11, 23, 7), at(2026, 11, 24, 9, 30)),     # before work: from 08:30
    (at(2026, 11, 23, 12, 30), at(2026, 11, 24, 15)),   # at lunch: from 14:00
    (at(2026, 11, 23, 19), at(2026, 11, 25, 9, 30)),    # in the evening: from tomorrow
    (at(2026, 11, 22, 10), at(2026, 11, 24, 9, 30)),    # on Sunday: from Monday
    (at(2026, 10, 2, 10), at(2026, 10, 9, 9, 30)),      # on a holiday: from 10-08
])
def test_a_working_hours_sla_starting_outside_working_hours(start: datetime,
                                                            due: datetime) -> None:
    assert wh(start, 8) == due


def test_next_working_moment_and_working_time_between() -> None:
    assert CAL.next_working(at(2026, 11, 21, 10)) == at(2026, 11, 23, 8, 30)
    assert CAL.next_working(at(2026, 11, 23, 12, 30)) == at(2026, 11, 23, 14)
    assert CAL.next_working(at(2026, 11, 23, 17, 30)) == at(2026, 11, 23, 17, 30)  # its end
    assert CAL.next_working(at(2026, 9, 30, 18)) == at(2026, 10, 8, 8, 30)
    assert CAL.working_between(at(2026, 9, 30, 10), at(2026, 10, 9, 17, 30)) == \
        timedelta(hours=19, minutes=30)


def test_a_calendar_of_holidays_does_not_hang() -> None:
    year = [(date(2027, 1, 1) + timedelta(days=i)).isoformat() for i in range(365)]
    cal = WorkCalendar.from_json({"holidays": year, "years": [2027]})
    assert wd(at(2026, 12, 31, 10), 1, cal) == at(2028, 1, 3, 17, 30)
    nothing = WorkCalendar(weekend=frozenset(range(1, 8)))  # the registry refuses this one
    began = walltime.monotonic()
    assert nothing.add_working(at(2026, 11, 23), 3600) == at(2026, 11, 23)
    assert nothing.add_working_days(at(2026, 11, 23), 2) == at(2026, 11, 23)
    assert nothing.next_working(at(2026, 11, 23)) == at(2026, 11, 23)
    assert walltime.monotonic() - began < 5


# --- a year the calendar does not know --------------------------------------------------------


def test_an_unknown_year_counts_weekends_only_and_is_reported() -> None:
    assert CAL.known(2026) and not CAL.known(2027)
    # 2027-01-01, a Friday, is New Year's Day, but nobody told the calendar: a working day.
    assert CAL.is_working_day(date(2027, 1, 1))
    assert wd(at(2026, 12, 31, 10), 1) == at(2027, 1, 1, 17, 30)
    assert CAL.unknown_years(at(2026, 12, 1), at(2027, 12, 1)) == [2027]
    policy = Policy(timezone="Asia/Shanghai", verify_within=None, remind_at=0.75,
                    overdue_repeat=None, escalate_after=None, rating_within=None,
                    quiet_start=None, quiet_end=None, working=frozenset({"other"}))
    warning = calendar_warning(policy, at(2026, 12, 1), at(2027, 12, 1))
    assert warning is not None and "does not know 2027" in warning
    assert "years: [2027]" in warning
    # No working-time category: nothing to warn about.
    assert calendar_warning(replace(policy, working=frozenset()),
                            at(2026, 12, 1), at(2027, 12, 1)) is None
    # The district publishes 2027's schedule in the registry: known, and no warning.
    cal = WorkCalendar.from_json({"holidays": ["2027-01-01"], "years": [2027]})
    assert cal.known(2027) and not cal.is_working_day(date(2027, 1, 1))
    assert wd(at(2026, 12, 31, 10), 1, cal) == at(2027, 1, 4, 17, 30)
    assert calendar_warning(replace(policy, calendar=cal),
                            at(2026, 12, 1), at(2027, 12, 1)) is None


# --- the timer model --------------------------------------------------------------------------


def policy_for(working: bool) -> Policy:
    return Policy(timezone="Asia/Shanghai", verify_within=None, remind_at=0.75,
                  overdue_repeat=timedelta(hours=4), escalate_after=timedelta(hours=24),
                  rating_within=None, quiet_start=None, quiet_end=None,
                  working=frozenset({"other"}) if working else frozenset())


def test_deadline_of_in_each_unit() -> None:
    p = policy_for(True)
    start = at(2026, 9, 30, 10)
    assert deadline_of(p, start, timedelta(hours=72)) == start + timedelta(hours=72)
    assert deadline_of(p, start, timedelta(hours=8), "wh") == at(2026, 10, 8, 11)
    assert deadline_of(p, start, timedelta(days=2), "wd") == at(2026, 10, 9, 17, 30)
    # An approved extension is clock time, as the request showed it: +1d.
    assert deadline_of(p, start, timedelta(days=2), "wd", 86400) == at(2026, 10, 10, 17, 30)


def test_due_soon_and_the_light_count_working_time() -> None:
    case = Case(category="other", urgent=False, status="accepted",
                clock_started_at=at(2026, 9, 30, 10), deadline_at=at(2026, 10, 9, 17, 30))
    # 75% of 19.5 working hours = 14 h 37 min 30 s: 5.5 h on 09-30, 7 h on 10-08, then
    # 2 h 07 min 30 s on 10-09.
    assert due_soon_at(case, policy_for(True)) == at(2026, 10, 9, 10, 37, 30)
    assert light(case, policy_for(True), at(2026, 10, 8, 12)).value == "green"
    assert light(case, policy_for(True), at(2026, 10, 9, 10, 38)).value == "yellow"
    # The same columns in clock time: 75% of 9 days 7.5 h is 10-07 09:37.
    assert light(case, policy_for(False), at(2026, 10, 8, 12)).value == "yellow"


def test_reminders_of_a_working_time_case_wait_for_working_time() -> None:
    case = Case(category="other", urgent=False)
    p = policy_for(True)
    assert p.hold_until(case, at(2026, 10, 1, 10)) == at(2026, 10, 8, 8, 30)
    assert p.hold_until(case, at(2026, 10, 8, 9)) is None
    assert policy_for(False).hold_until(case, at(2026, 10, 1, 10)) is None
    case.urgent = True
    assert p.hold_until(case, at(2026, 10, 1, 10)) is None


# --- through the bot ----------------------------------------------------------------------------


async def load(h: Harness, *edits: tuple[str, str], extra: str = "") -> None:
    text = SAMPLE.read_text("utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text + extra), h.clock)


# No keyword of the sample registry matches it: the case is filed as "other", whose SLA these
# tests set in working days.
OTHER_TEXT = "快递柜不够用"

def other_in_working_days(text: str) -> tuple[str, str]:
    line = next(x for x in text.splitlines() if "{code: other," in x)
    return line, line.replace("sla: 72h", "sla: 2wd")


async def until(h: Harness, moment: datetime) -> None:
    """Move the clock to `moment`, sweeping once a day on the way (as a running bot would
    many times), then at `moment`."""
    while moment - h.clock.now() > timedelta(days=1):
        await h.advance(timedelta(days=1))
    await h.advance(moment - h.clock.now())


def alerts(h: Harness, word: str) -> int:
    """The leader's reminder lists with a line saying `word` (issue 21: one list a sweep)."""
    return h.reminded(LEADER, word)


DUE_SOON, OVERDUE = "临期提醒", "超期"


@pytest.fixture
async def holiday(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The bot on 2026-09-30 10:00, the eve of National Day, `other` in working days."""
    h = await make_harness(tmp_path, start=at(2026, 9, 30, 10))
    await load(h, other_in_working_days(SAMPLE.read_text("utf-8")))
    yield h
    await h.app.close()


async def test_a_working_day_case_skips_national_day(holiday: Harness) -> None:
    h = holiday
    case = await h.report_in_group(OTHER_TEXT)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    case = await h.case(case.id)
    assert case.category == "other"
    assert case.deadline_at == at(2026, 10, 9, 17, 30)
    assert "办结时限：10-09 17:30" in h.card(LEADER, case.id).text

    # Nothing through the holiday, nor on 10-09 before 75% of the working time.
    await until(h, at(2026, 10, 9, 10, 37))
    assert alerts(h, DUE_SOON) == 0 and alerts(h, OVERDUE) == 0
    await until(h, at(2026, 10, 9, 10, 37, 30))
    assert alerts(h, DUE_SOON) == 1
    await until(h, at(2026, 10, 9, 17, 29))
    assert alerts(h, OVERDUE) == 0
    await until(h, at(2026, 10, 9, 17, 30))
    assert alerts(h, OVERDUE) == 1
    # The repeat due at 21:30 waits for working time: Saturday 10-10 is a 调休 working day.
    await until(h, at(2026, 10, 10, 8, 29))
    assert alerts(h, OVERDUE) == 1
    await until(h, at(2026, 10, 10, 8, 30))
    assert alerts(h, OVERDUE) == 2
    assert "auto_escalate" not in await h.events(case.id)


async def test_reminders_wait_out_a_weekend(tmp_path: Path) -> None:
    # Friday 2026-11-20 16:00, 1wd: due Monday 17:30; due soon at 75% of 8.5 working hours.
    h = await make_harness(tmp_path, start=at(2026, 11, 20, 16))
    try:
        line = other_in_working_days(SAMPLE.read_text("utf-8"))
        await load(h, (line[0], line[1].replace("2wd", "1wd")))
        case = await h.report_in_group(OTHER_TEXT)
        await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
        case = await h.case(case.id)
        assert case.deadline_at == at(2026, 11, 23, 17, 30)
        # 8.5 h × 0.75 = 6 h 22 min 30 s: 1.5 h on Friday, 3.5 h Monday morning, 1 h 22.5 min.
        await until(h, at(2026, 11, 23, 15, 22))
        assert alerts(h, DUE_SOON) == 0
        await until(h, at(2026, 11, 23, 15, 22, 30))
        assert alerts(h, DUE_SOON) == 1
    finally:
        await h.app.close()


async def test_a_calendar_change_retimes_an_open_case(holiday: Harness) -> None:
    h = holiday
    case = await h.report_in_group(OTHER_TEXT)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert (await h.case(case.id)).deadline_at == at(2026, 10, 9, 17, 30)
    # The district gives 10-09 off: the second working day is Saturday 10-10 (调休).
    await load(h, other_in_working_days(SAMPLE.read_text("utf-8")),
               extra="\ncalendar:\n  holidays: [2026-10-09]\n")
    case = await h.case(case.id)
    assert case.deadline_at == at(2026, 10, 10, 17, 30)
    assert case.next_check_at is not None and case.next_check_at <= h.clock.now()
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        assert "other" in tx.policy.working
        assert not tx.policy.calendar.is_working_day(date(2026, 10, 9))


async def test_the_start_warns_of_a_year_the_calendar_does_not_know(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = await make_harness(tmp_path)  # 2026-11-23: deadlines may run into 2027
    try:
        assert await warn_calendar(h.app) is None  # no working-time category yet
        await load(h, other_in_working_days(SAMPLE.read_text("utf-8")))
        with caplog.at_level(logging.WARNING, logger="bot.app"):
            warning = await warn_calendar(h.app)
        assert warning is not None and "does not know 2027" in warning
        assert any("does not know 2027" in r.getMessage() for r in caplog.records)
        await load(h, other_in_working_days(SAMPLE.read_text("utf-8")),
                   extra="\ncalendar:\n  holidays: ['2027-01-01..2027-01-03']\n"
                         "  years: [2027]\n")
        assert await warn_calendar(h.app) is None
    finally:
        await h.app.close()


def test_escalations_of_a_working_time_case_fall_in_working_time() -> None:
    case = Case(category="other", urgent=False, status="accepted", round=1,
                clock_started_at=at(2026, 11, 19, 10), deadline_at=at(2026, 11, 20, 17, 30),
                request_at=None, whistle_due_at=None)
    now = at(2026, 11, 20, 18)

    def escalations(policy: Policy) -> list[datetime]:
        steps = pending_steps(Phase.HANDLE, case, policy, now, set())
        return [s.due_at for s in steps if s.name == StepName.ESCALATE]

    # Friday's deadline + 24 h is Saturday: Monday 08:30; the street a working day later.
    assert escalations(policy_for(True)) == [at(2026, 11, 23, 8, 30), at(2026, 11, 24, 8, 30)]
    assert escalations(policy_for(False)) == [at(2026, 11, 21, 17, 30),
                                              at(2026, 11, 22, 17, 30)]


@pytest.mark.parametrize("text", ["4h", "3d", "8wh", "2wd", "90m"])
def test_slas_format_as_written(text: str) -> None:
    assert format_sla(*parse_sla(text)) == text
