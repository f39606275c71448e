"""Deadline arithmetic: when each reminder of a case falls due, and the quiet hours.

Pure functions over a case's columns and the policy, so the sweep and the tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from storage.models import Case, OrgSettings


class Light(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


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

    @classmethod
    def from_row(cls, row: OrgSettings) -> Policy:
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
        )

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


def due_soon_at(case: Case, policy: Policy) -> datetime | None:
    if policy.remind_at is None:
        return None
    return case.reported_at + (case.deadline_at - case.reported_at) * policy.remind_at


def verify_remind_at(case: Case, policy: Policy) -> datetime | None:
    if policy.remind_at is None or case.verify_due_at is None or policy.verify_within is None:
        return None
    return case.reported_at + policy.verify_within * policy.remind_at


def light(case: Case, policy: Policy, now: datetime) -> Light:
    if now >= case.deadline_at:
        return Light.RED
    soon = due_soon_at(case, policy)
    if soon is not None and now >= soon:
        return Light.YELLOW
    return Light.GREEN


def escalation_at(case: Case, policy: Policy, step: int) -> datetime | None:
    """When automatic escalation number `step` (1: community, 2: street) falls due."""
    if policy.escalate_after is None:
        return None
    return case.deadline_at + policy.escalate_after * step
