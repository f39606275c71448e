"""The one timer model of a case: when each of its steps falls due, and the quiet hours.

A case's clock starts at its report and again at a rework (返工) or the end of a suspension;
its deadline is the clock start plus its current category's SLA and the extensions approved.
Every timer step (verification reminder and timeout, due soon, overdue and its repeats, each
escalation, the rating timeout, and the workflow's request, review, check and whistle steps)
is derived here from the case's columns, the phase of its status, the policy and the steps
already taken. Pure functions
over a case's columns, so the sweep, the transitions and the tests share them.

An SLA written in working time (`8wh`, `2wd`) is counted on the policy's working calendar
(bot/org/workcal.py): its deadline and its due-soon moment skip nights, weekends and holidays,
its reminders wait for working time as every reminder waits out the quiet hours, and its
escalations fall in working time, and so do its extensions (延期): "1 天" is one working day.
The policy's windows stay clock time.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.cases.status import HANDLING, CaseStatus
from bot.org.policy import Policy
from bot.org.workcal import warning_text
from storage.models import Case


class Light(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    PAUSED = "paused"  # suspended (挂账): no deadline runs


class Phase(StrEnum):
    """Which timers a status has; a status with no phase (final ones) has none."""

    VERIFY = "verify"  # the building head's window, ending at the latest at the deadline
    HANDLE = "handle"  # due soon, overdue and its repeats, escalations
    RATE = "rate"  # the reporter's window to rate
    CHECK = "check"  # the building head's on-site check after the result
    SUSPENDED = "suspended"  # 挂账: only the review date; no reminders, never red


class StepName(StrEnum):
    VERIFY_REMIND = "verify_remind"
    VERIFY_TIMEOUT = "verify_timeout"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    ESCALATE = "escalate"
    RATING_TIMEOUT = "rating_timeout"
    # The steps of the workflow features: each changes something and is made on time.
    REQUEST_TIMEOUT = "request_timeout"  # an extension or suspension request nobody answered
    SUSPEND_REVIEW = "suspend_review"  # a suspended case's review date
    CHECK_TIMEOUT = "check_timeout"  # no on-site check within check_within
    WHISTLE_ESCALATE = "whistle_escalate"  # a department did not acknowledge in time
    WHISTLE_REMIND = "whistle_remind"  # a department acknowledged but has not reported done


# Steps that only remind someone: they wait for the end of the quiet hours. The others
# change the case and are made on time (their cards wait instead).
REMINDERS = frozenset({StepName.VERIFY_REMIND, StepName.DUE_SOON, StepName.OVERDUE,
                       StepName.WHISTLE_REMIND})
# Steps that change the case but whose news is the reporter's: they wait for the end of the
# quiet hours too (not for working time), so nobody is asked for a rating at night.
QUIET_STEPS = frozenset({StepName.CHECK_TIMEOUT})
# (step, n, basis): what identifies a step taken, as recorded in case_timer_steps.
SentKey = tuple[str, int, datetime]


@dataclass(frozen=True)
class Step:
    name: StepName
    due_at: datetime
    # What the step is counted from: the clock start, the deadline, or the resolution.
    basis: datetime
    # Which overdue alert or which escalation (1: community, 2: street).
    n: int = 1

    @property
    def key(self) -> SentKey:
        return (self.name.value, self.n, self.basis)

    @property
    def reminder(self) -> bool:
        return self.name in REMINDERS


def add_time(policy: Policy, start: datetime, delta: timedelta) -> datetime:
    """`delta` of the district's time after `start`, for the policy's windows (an answer to a
    request, the on-site check, a whistle's acknowledgement): clock time. Only SLAs written
    `wh`/`wd` count working time (`deadline_of`), and their extensions (`extend`)."""
    return start + delta


def extend(policy: Policy, deadline: datetime, seconds: int, working: bool) -> datetime:
    """`deadline` moved on by an extension of `seconds` as asked (a day is 86400): clock time,
    or for a working-time case working time, each day one working day (WorkCalendar.extend).
    What `deadline_of` adds and what the request card shows."""
    if working:
        return policy.calendar.extend(deadline, seconds)
    return deadline + timedelta(seconds=seconds)


def original_deadline(policy: Policy, case: Case) -> datetime:
    """The case's deadline before this round's extensions (the card's 原时限)."""
    if policy.in_working_time(case):
        return policy.calendar.retract(case.deadline_at, case.extended_seconds)
    return case.deadline_at - timedelta(seconds=case.extended_seconds)


def deadline_of(policy: Policy, clock_started_at: datetime, sla: timedelta, unit: str = "",
                extended_seconds: int = 0) -> datetime:
    """The clock start plus the SLA, plus the extensions (延期) approved for this round.

    `unit` is the category's: '' clock time; 'wh' the SLA is working time from the clock
    start (a start outside working hours counts from the next working period); 'wd' the SLA
    is whole working days (`sla` = days × 24h), due at the end of the last one (see
    WorkCalendar.add_working_days). Extensions count in the same unit (`extend`): in working
    time for 'wh' and 'wd', "1 天" being one working day, as the request card showed it.
    """
    if unit == "wh":
        base = policy.calendar.add_working(clock_started_at, sla.total_seconds())
    elif unit == "wd":
        days = max(1, int(sla.total_seconds()) // 86400)
        base = policy.calendar.add_working_days(clock_started_at, days)
    else:
        base = clock_started_at + sla
    return extend(policy, base, extended_seconds, unit in ("wh", "wd"))


def due_soon_at(case: Case, policy: Policy) -> datetime | None:
    """`remind_at` of the way from the clock start to the deadline; for a working-time case,
    of the working time between them (so 75% of 2wd falls on the second working day)."""
    if policy.remind_at is None:
        return None
    start = case.clock_started_at
    if policy.in_working_time(case):
        span = policy.calendar.working_between(start, case.deadline_at)
        return policy.calendar.add_working(start, span.total_seconds() * policy.remind_at)
    return start + (case.deadline_at - start) * policy.remind_at


def calendar_warning(policy: Policy, start: datetime, end: datetime) -> str | None:
    """What to say when working-time deadlines from `start` to `end` run into years the
    calendar does not know (counted weekends only there); None when none do, or no category
    counts working time. The bot logs it at start; /stats shows it."""
    if not policy.working:
        return None
    return warning_text(policy.calendar.unknown_years(start, end))


def verify_ends_at(case: Case, policy: Policy) -> datetime:
    """The building head's window closes after `verify_within`, and at the latest at the
    deadline: a report nobody verifies still reaches the grid leader in time to be overdue."""
    end = case.deadline_at
    if policy.verify_within is not None:
        end = min(end, case.clock_started_at + policy.verify_within)
    return end


def overdue_alerts_owed(case: Case, policy: Policy, now: datetime) -> int:
    """How many red-light alerts the deadline has called for by `now` (0 before it)."""
    if now < case.deadline_at:
        return 0
    repeat = policy.overdue_repeat
    if repeat is None or repeat <= timedelta(0):
        return 1
    return (now - case.deadline_at) // repeat + 1


def whistle_remind_at(case: Case, policy: Policy) -> datetime | None:
    """When departments that acknowledged (报到) but have not reported done (已处理) are
    reminded: with the case's own next reminder after the earliest such acknowledgement
    (`whistle_acked_at`): its due-soon moment, else its deadline, else (already overdue) its
    next overdue alert. None: no such department, or no reminder left to go with."""
    acked = case.whistle_acked_at
    if acked is None:
        return None
    soon = due_soon_at(case, policy)
    if soon is not None and acked < soon:
        return soon
    deadline = case.deadline_at
    if acked < deadline:
        return deadline
    repeat = policy.overdue_repeat
    if repeat is None or repeat <= timedelta(0):
        return None
    return deadline + repeat * ((acked - deadline) // repeat + 1)


def pending_steps(phase: Phase | None, case: Case, policy: Policy, now: datetime,
                  sent: Set[SentKey]) -> list[Step]:
    """The steps of the case not taken yet, soonest first: those due by `now` and the next
    ones. A pure function of the clock start, the deadline, the phase, the policy and what
    was taken, so no transition has anything to reset.

    Of reminders overtaken by time only the latest is owed: no due-soon reminder once the
    deadline has passed, no verification reminder once the window has closed, and of the
    overdue alerts missed while the bot was down, only the last.
    """
    steps: list[Step] = []
    if phase == Phase.VERIFY:
        start, end = case.clock_started_at, verify_ends_at(case, policy)
        if policy.remind_at is not None and now < end:
            steps.append(Step(StepName.VERIFY_REMIND, start + (end - start) * policy.remind_at,
                              start))
        steps.append(Step(StepName.VERIFY_TIMEOUT, end, start))
    elif phase == Phase.HANDLE:
        deadline = case.deadline_at
        soon = due_soon_at(case, policy)
        if soon is not None and now < deadline:
            steps.append(Step(StepName.DUE_SOON, soon, deadline))
        owed = overdue_alerts_owed(case, policy, now)
        repeat = policy.overdue_repeat
        if owed:
            steps.append(Step(StepName.OVERDUE, _overdue_at(deadline, repeat, owed), deadline,
                              owed))
        if owed == 0 or (repeat is not None and repeat > timedelta(0)):
            steps.append(Step(StepName.OVERDUE, _overdue_at(deadline, repeat, owed + 1),
                              deadline, owed + 1))
        if policy.escalate_after is not None:
            working = policy.in_working_time(case)
            at = deadline
            for n in (1, 2):
                at += policy.escalate_after
                # A working-time case is escalated in working time: an escalation falling on
                # a night or a holiday is made at the next working moment, and the second
                # counts from the first (not both on the Monday after a weekend).
                if working:
                    at = policy.calendar.next_working(at)
                steps.append(Step(StepName.ESCALATE, at, deadline, n))
        if case.request_at is not None and policy.extension_answer_within:
            steps.append(Step(StepName.REQUEST_TIMEOUT,
                              add_time(policy, case.request_at,
                                       policy.extension_answer_within),
                              case.request_at))
        if case.whistle_due_at is not None:
            # A whistle's ack_due_at is its call plus the policy's positive ack_within (again
            # for those still called when the policy changes), and one take escalates every
            # whistle due by then: any whistle left over or called later is due after every
            # basis already taken (or, under a shorter window, at a basis of its own), so
            # (step, 1, basis) is never taken twice for different whistles.
            steps.append(Step(StepName.WHISTLE_ESCALATE, case.whistle_due_at,
                              case.whistle_due_at))
        if (remind := whistle_remind_at(case, policy)) is not None:
            # Each department is reminded once: the step reminds those acknowledged before
            # it, and `whistle_acked_at` moves on to those acknowledged after it.
            steps.append(Step(StepName.WHISTLE_REMIND, remind, remind))
    elif phase == Phase.SUSPENDED:
        # The only step of a suspended case: no due soon, no overdue, no escalation.
        if case.review_at is not None:
            steps.append(Step(StepName.SUSPEND_REVIEW, case.review_at, case.review_at))
    elif phase == Phase.CHECK:
        if policy.check_within and case.resolved_at is not None:
            steps.append(Step(StepName.CHECK_TIMEOUT,
                              add_time(policy, case.resolved_at, policy.check_within),
                              case.resolved_at))
    elif phase == Phase.RATE and case.resolved_at is not None and policy.rating_within:
        # After a check the reporter gets the whole window from the check (old rows: none).
        start = case.checked_at or case.resolved_at
        steps.append(Step(StepName.RATING_TIMEOUT, start + policy.rating_within, start))
    return sorted((s for s in steps if s.key not in sent), key=lambda s: s.due_at)


def _overdue_at(deadline: datetime, repeat: timedelta | None, n: int) -> datetime:
    return deadline + (repeat or timedelta(0)) * (n - 1)


def _held(step: Step, case: Case, policy: Policy, now: datetime) -> datetime | None:
    """Until when `step`, due by `now`, waits: a reminder for the end of the quiet hours (and
    for working time), a step in QUIET_STEPS for the end of the quiet hours; an urgent
    case's never wait."""
    if step.reminder:
        return policy.hold_until(case, now)
    if step.name in QUIET_STEPS and not case.urgent:
        return policy.quiet_until(now)
    return None


def due_now(steps: list[Step], case: Case, policy: Policy, now: datetime) -> list[Step]:
    """The steps to take now: reminders of a case that is not urgent wait out quiet hours,
    and those of a working-time case wait for working time; a check timeout waits out the
    quiet hours."""
    return [s for s in steps if s.due_at <= now and _held(s, case, policy, now) is None]


def next_check(steps: list[Step], case: Case, policy: Policy, now: datetime
               ) -> datetime | None:
    """When the sweep must look at the case again: its first step, a reminder falling in the
    current quiet hours (or, for a working-time case, outside working time) counted at their
    end."""
    times = []
    for s in steps:
        held = _held(s, case, policy, now)
        times.append(max(s.due_at, held) if held is not None else s.due_at)
    return min(times, default=None)


def light(case: Case, policy: Policy, now: datetime) -> Light:
    if case.status == CaseStatus.SUSPENDED:
        return Light.PAUSED
    if now >= case.deadline_at:
        return Light.RED
    soon = due_soon_at(case, policy)
    if soon is not None and now >= soon:
        return Light.YELLOW
    return Light.GREEN


# --- where a deadline stands, and what may move it --------------------------------------------

# The statuses whose deadline runs: the case waits for its result. Only in these is the
# deadline derived again (from the registry and the case's columns); once a result is
# recorded (resolved, checking), and while the case is suspended or closed, the deadline it
# is judged against stays what it was, whatever the registry says later.
RUNNING: frozenset[CaseStatus] = frozenset({CaseStatus.VERIFYING, *HANDLING})


class Moved(StrEnum):
    """What a change of the deadline's derivation (改类别, a registry edit) did to it."""

    SAME = "same"  # where it was
    MOVED = "moved"  # to the new derivation (earlier, or later where that is allowed)
    HELD = "held"  # the new one is later, and more time is an extension: it stays
    PASSED = "passed"  # it had passed: it stays


def runs(case: Case) -> bool:
    """Whether the case's deadline runs (see RUNNING)."""
    return case.status in RUNNING


def offset(case: Case) -> timedelta:
    return timedelta(seconds=case.deadline_offset_seconds or 0)


def move_deadline(current: datetime, proposed: datetime, now: datetime, *,
                  later: bool) -> tuple[datetime, Moved]:
    """Where a deadline goes when its derivation says `proposed` instead of `current`.

    A deadline that has passed stays: it was judged overdue, and a period that has ended
    may have counted it so. None is moved into the past: by a shorter SLA a case may have
    been due before anyone said so; it is due now. With `later` False (改类别), none is moved
    later: more time is an extension, asked for and approved above (延期).
    """
    if now >= current:
        return current, Moved.PASSED
    target = max(proposed, now)
    if target > current and not later:
        return current, Moved.HELD
    return target, (Moved.SAME if target == current else Moved.MOVED)


def hold_deadline(case: Case, target: datetime, derived: datetime) -> None:
    """Set the case's deadline to `target`, where the registry derives `derived` (without
    an offset): the difference is kept in `deadline_offset_seconds` (whole seconds, rounded
    up: never earlier than `target`), so the deadline derived again stays there."""
    seconds = -((derived - target) // timedelta(seconds=1))
    case.deadline_offset_seconds = seconds
    case.deadline_at = derived + timedelta(seconds=seconds)
