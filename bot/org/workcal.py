"""The working calendar: which days are working days, the working hours of a day, and time
counted in working time for the SLAs written `8wh` (working hours) and `2wd` (working days).

A day is a working day, in this order of precedence:
1. the registry's `workdays` (working) and `holidays` (off): a district's own days, and next
   year's schedule before the package has it;
2. the State Council's official schedule (the `chinese_calendar` package, for the years it
   carries, when `official` is on): public holidays off, 调休 make-up weekend days working;
3. otherwise the weekday: working unless it is in `weekend`.

A year is *known* when the package carries it (and `official` is on) or the registry lists it
in `years` (it declares that its `holidays`/`workdays` complete that year's schedule). In a year
neither knows, only weekends are off: `unknown_years` names such years so the bot can say so.

Every computation walks day by day (never minute by minute) and at most `MAX_DAYS` days, so a
registry declaring years of holidays cannot hang the sweep: the walk stops there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

try:  # the official schedule; without the package every year is unknown (weekends only)
    from chinese_calendar import constants as _official  # type: ignore[import-untyped]

    OFFICIAL_HOLIDAYS: frozenset[date] = frozenset(_official.holidays)
    OFFICIAL_WORKDAYS: frozenset[date] = frozenset(_official.workdays)
except ImportError:  # pragma: no cover - it is a dependency
    OFFICIAL_HOLIDAYS = OFFICIAL_WORKDAYS = frozenset()
OFFICIAL_YEARS: frozenset[int] = frozenset(d.year for d in OFFICIAL_HOLIDAYS)

DEFAULT_HOURS = (("08:30", "12:00"), ("14:00", "17:30"))
DEFAULT_WEEKEND = (6, 7)  # ISO weekdays: Saturday, Sunday
DEFAULT_TIMEZONE = "Asia/Shanghai"
# The longest walk through the calendar (about ten years): past it a computation stops where
# it got to, rather than loop over a calendar with (almost) no working time.
MAX_DAYS = 3660


@dataclass(frozen=True)
class WorkCalendar:
    timezone: str = DEFAULT_TIMEZONE
    periods: tuple[tuple[time, time], ...] = tuple(
        (time.fromisoformat(a), time.fromisoformat(b)) for a, b in DEFAULT_HOURS)
    weekend: frozenset[int] = frozenset(DEFAULT_WEEKEND)
    official: bool = True
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    years: frozenset[int] = frozenset()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None,
                  timezone: str = DEFAULT_TIMEZONE) -> WorkCalendar:
        """The calendar of `org_settings.calendar` (None: the defaults). Cached per value, so
        building a Policy for every transaction costs a dictionary lookup."""
        return _from_json(json.dumps(data, sort_keys=True), timezone)

    # --- days ------------------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        if self.official and day.year in OFFICIAL_YEARS:
            if day in OFFICIAL_WORKDAYS:
                return True
            if day in OFFICIAL_HOLIDAYS:
                return False
        return day.isoweekday() not in self.weekend

    def known(self, year: int) -> bool:
        """Whether the calendar has the year's public holidays (else: weekends only)."""
        return (self.official and year in OFFICIAL_YEARS) or year in self.years

    def unknown_years(self, start: datetime, end: datetime) -> list[int]:
        """The years from `start` to `end` (local dates) the calendar does not know."""
        first, last = self._local(start).year, self._local(end).year
        return [y for y in range(first, last + 1) if not self.known(y)]

    # --- moments ---------------------------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def periods_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working periods of `day` as aware instants; none on a day off."""
        if not self.is_working_day(day):
            return []
        tz = self.tz
        return [(datetime.combine(day, a, tzinfo=tz), datetime.combine(day, b, tzinfo=tz))
                for a, b in self.periods]

    def _days(self, first: date) -> Iterator[tuple[date, list[tuple[datetime, datetime]]]]:
        for i in range(MAX_DAYS):
            day = first + timedelta(days=i)
            yield day, self.periods_on(day)

    def next_working(self, moment: datetime) -> datetime:
        """`moment` if it is in working time (the end of a period included: a deadline at
        17:30 is still a working moment), else the start of the next working period."""
        for _, periods in self._days(self._local(moment).date()):
            for a, b in periods:
                if moment <= b:
                    return max(a, moment).astimezone(moment.tzinfo)
        return moment

    def add_working(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of working time after `start`: time outside working hours
        does not count, so a start outside them counts from the next working period. Ends in
        a period, or at its end when the time runs out exactly there."""
        left = timedelta(seconds=seconds)
        cursor = start
        for _, periods in self._days(self._local(start).date()):
            for a, b in periods:
                if b <= cursor:
                    continue
                begin = max(a, cursor)
                if left <= b - begin:
                    return (begin + left).astimezone(start.tzinfo)
                left -= b - begin
                cursor = b
        return cursor.astimezone(start.tzinfo)

    def working_between(self, start: datetime, end: datetime) -> timedelta:
        """The working time from `start` to `end` (zero if `end` is not after `start`)."""
        total = timedelta(0)
        if end <= start:
            return total
        last = self._local(end).date()
        for day, periods in self._days(self._local(start).date()):
            if day > last:
                break
            for a, b in periods:
                lo, hi = max(a, start), min(b, end)
                if hi > lo:
                    total += hi - lo
        return total

    def next_working_day(self, day: date) -> date:
        """`day` if it is a working day, else the first working day after it (a 挂账 review
        date on a holiday moves there)."""
        for later, periods in self._days(day):
            if periods:
                return later
        return day

    @property
    def day_seconds(self) -> float:
        """The working time of one working day (7 h with the default hours)."""
        return sum((datetime.combine(date.min, b) - datetime.combine(date.min, a))
                   .total_seconds() for a, b in self.periods)

    def _extension(self, seconds: float) -> float:
        """The working time of an extension asked as `seconds` (a day is 86400): each whole
        day is one working day, each hour one working hour."""
        days, rest = divmod(seconds, 86400)
        return days * self.day_seconds + rest

    def extend(self, deadline: datetime, seconds: float) -> datetime:
        """An extension (延期) of a working-time deadline, counted in working time: "1 天" is
        one working day, so 09-30 17:30 + 1d is 10-08 17:30 across National Day."""
        working = self._extension(seconds)
        if working <= 0:
            return deadline
        return self.add_working(deadline, working)

    def retract(self, deadline: datetime, seconds: float) -> datetime:
        """The deadline before an extension of `seconds` (`extend` undone): walks back that
        much working time and, landing on the start of a period, gives the end of the one
        before (a deadline is the end of a period, not the start of the next)."""
        left = timedelta(seconds=self._extension(seconds))
        if left <= timedelta(0):
            return deadline
        cursor = deadline
        first = self._local(deadline).date()
        for i in range(MAX_DAYS):
            for a, b in reversed(self.periods_on(first - timedelta(days=i))):
                if a >= cursor:
                    continue
                end = min(b, cursor)
                if left <= timedelta(0):
                    # Walked back exactly to the start of a later period: this one's end.
                    return end.astimezone(deadline.tzinfo)
                if left < end - a:
                    return (end - left).astimezone(deadline.tzinfo)
                left -= end - a
                cursor = a
        return cursor.astimezone(deadline.tzinfo)

    def add_working_days(self, start: datetime, days: int) -> datetime:
        """N working days from a report, as 「N个工作日内」 is counted in administration (the
        day a period starts does not count, 期间开始之日不计算在内): the end of the last
        working period of the N-th working day after the local day of `start`. Reported on
        Monday at 10:00 with 2wd: due Wednesday at 17:30; on Friday at 20:00 (or on the
        weekend) with 1wd: due Monday at 17:30 (Tuesday if Monday is a holiday)."""
        count = 0
        first = self._local(start).date() + timedelta(days=1)
        last_end: datetime | None = None
        for _, periods in self._days(first):
            if not periods:
                continue
            count += 1
            last_end = periods[-1][1]
            if count >= days:
                break
        if last_end is None:
            return start
        return last_end.astimezone(start.tzinfo)


@lru_cache(maxsize=32)
def _from_json(text: str, timezone: str) -> WorkCalendar:
    data = json.loads(text) or {}
    hours = data.get("hours") or DEFAULT_HOURS
    return WorkCalendar(
        timezone=timezone,
        periods=tuple(sorted((time.fromisoformat(a), time.fromisoformat(b))
                             for a, b in hours)),
        weekend=frozenset(data.get("weekend", DEFAULT_WEEKEND)),
        official=bool(data.get("official", True)),
        holidays=frozenset(date.fromisoformat(d) for d in data.get("holidays", ())),
        workdays=frozenset(date.fromisoformat(d) for d in data.get("workdays", ())),
        years=frozenset(int(y) for y in data.get("years", ())),
    )


def default_calendar() -> WorkCalendar:
    return WorkCalendar.from_json(None)


def warning_text(years: list[int]) -> str | None:
    """What to tell the operator about years the calendar does not know (None: none)."""
    if not years:
        return None
    named = ", ".join(str(y) for y in years)
    return (f"working calendar does not know {named}: counting weekends only; add the "
            f"year's holidays/workdays and `years: [{named}]` to the registry")
