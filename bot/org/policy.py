"""The district's policy from its registry: time zone, quiet hours, the windows of every
timer step, the workflow's limits and the working calendar. A case's timers are derived from
it (bot/cases/deadlines.py); it is read once per operation (bot/context.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.org.workcal import WorkCalendar, default_calendar
from storage.models import Case, OrgSettings


@dataclass(frozen=True)
class Policy:
    timezone: str
    verify_within: timedelta | None
    remind_at: float | None
    overdue_repeat: timedelta | None
    escalate_after: timedelta | None
    rating_within: timedelta | None
    quiet_start: time | None
    quiet_end: time | None
    # The workflow of the standard (延期, 挂账, 核查, 吹哨报到). Defaults are the registry's, so a
    # Policy made by hand (tests) need not name them.
    max_extensions: int = 1
    extension_answer_within: timedelta | None = timedelta(days=1)
    check_all: bool = False
    check_within: timedelta | None = timedelta(days=1)
    whistle_ack_within: timedelta | None = timedelta(minutes=30)
    # The working calendar (issue 10), and the categories whose SLA counts working time
    # ('wh', 'wd'): their cases' due-soon moment is a share of the working time, and their
    # reminders wait for working time as all reminders wait out the quiet hours.
    calendar: WorkCalendar = field(default_factory=default_calendar)
    working: frozenset[str] = frozenset()
    # Duplicates (issue 11): how far back and how near an open case is offered to a new
    # report as the same problem; no window, no offer.
    duplicate_window: timedelta | None = timedelta(days=3)
    duplicate_radius: float = 50.0

    @classmethod
    def from_row(cls, row: OrgSettings, working: Iterable[str] = ()) -> Policy:
        """The policy of the org settings; `working`: the codes of the categories whose SLA
        is in working time (the directory knows them)."""
        def seconds(value: int | None) -> timedelta | None:
            return timedelta(seconds=value) if value is not None else None

        def hhmm(value: str | None) -> time | None:
            return time.fromisoformat(value) if value else None

        return cls(
            timezone=row.timezone,
            verify_within=seconds(row.verify_within),
            remind_at=row.remind_at,
            overdue_repeat=seconds(row.overdue_repeat),
            escalate_after=seconds(row.escalate_after),
            rating_within=seconds(row.rating_within),
            quiet_start=hhmm(row.quiet_start),
            quiet_end=hhmm(row.quiet_end),
            max_extensions=row.max_extensions,
            extension_answer_within=seconds(row.extension_answer_within),
            check_all=row.check_all,
            check_within=seconds(row.check_within),
            whistle_ack_within=seconds(row.whistle_ack_within),
            calendar=WorkCalendar.from_json(row.calendar, row.timezone),
            working=frozenset(working),
            duplicate_window=seconds(row.duplicate_window),
            duplicate_radius=row.duplicate_radius,
        )

    def in_working_time(self, case: Case) -> bool:
        """Whether the case's SLA counts working time (its category's is `wh` or `wd`)."""
        return case.category in self.working

    def hold_until(self, case: Case, now: datetime) -> datetime | None:
        """Until when a reminder of `case` due `now` waits, or None: the end of the quiet
        hours, and for a working-time case the next working moment (an urgent case's
        reminders never wait)."""
        if case.urgent:
            return None
        at = now
        working = self.in_working_time(case)
        for _ in range(3):  # working hours inside quiet hours: settle on a moment clear of both
            quiet = self.quiet_until(at)
            moved = quiet if quiet is not None else at
            if working:
                moved = self.calendar.next_working(moved)
            if moved == at:
                break
            at = moved
        return at if at > now else None

    def quiet_until(self, now: datetime) -> datetime | None:
        """End of the quiet hours if `now` falls in them, else None."""
        if self.quiet_start is None or self.quiet_end is None or self.quiet_start == self.quiet_end:
            return None
        tz = ZoneInfo(self.timezone)
        local = now.astimezone(tz)
        t = local.timetz().replace(tzinfo=None)
        start, end = self.quiet_start, self.quiet_end
        if start < end:
            inside = start <= t < end
            end_day = local.date()
        else:  # spans midnight, e.g. 22:00-07:00
            inside = t >= start or t < end
            end_day = local.date() + timedelta(days=1) if t >= start else local.date()
        if not inside:
            return None
        return datetime.combine(end_day, end, tzinfo=tz).astimezone(now.tzinfo)
