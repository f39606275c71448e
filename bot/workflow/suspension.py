"""挂账: a case that waits on money, planning or another authority is suspended until a review
date.

The handler asks with a reason and a review date; the supervisors of the level above answer
through the one request mechanism (bot.workflow.case_requests), whose approval calls `approve`
here, once `recheck` has found the review date still ahead (an approval on or after it is
refused: it would suspend into the past). A review date on a day off of the district's
working calendar moves to the next working day, and the card and the reporter say so.
A suspended case has one timer, its review date (Phase.SUSPENDED): no reminders, no red light.
On that date, or earlier when someone resumes it from its card or `/case`, the case returns to
its handler with a fresh clock in the same round: a restart, not a rework, so the rework count
(`round - 1`) stays. The reporter is told privately both times, never in the building group.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.deadlines import Step
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING
from bot.context import Tx
from bot.errors import DomainError
from bot.org import roles as org
from bot.org.roles import Actor, Lineage
from bot.user_text import ascii_digits
from bot.workflow import case_requests
from bot.workflow.case_requests import RequestKind, RequestStatus
from storage.models import Case, CaseRequest

# Whether the cards offer 挂账 and 恢复办理.
ENABLED = True

# The review date lies this many calendar days ahead (in the registry's time zone), inclusive.
MIN_DAYS, MAX_DAYS = 1, 366
# A review date typed or picked as a day falls at the start of that working day.
REVIEW_TIME = time(9, 0)
# The lengths offered as buttons (`sv:<n>d`).
REVIEW_CHOICES = ("30d", "90d", "180d")

_FULL_DATE = re.compile(r"^([0-9]{4})[-/.年]([0-9]{1,2})[-/.月]([0-9]{1,2})日?$")
_MONTH_DAY = re.compile(r"^([0-9]{1,2})[-/.月]([0-9]{1,2})日?$")
_DAYS = re.compile(r"^([0-9]{1,3})\s*(?:d|天)$", re.IGNORECASE)


def parse_review(text: str, now: datetime, tz: str) -> datetime:
    """The review date typed by the handler, as 09:00 local on that day; ValueError for
    anything else, or for a day not within MIN_DAYS..MAX_DAYS of today.

    `2027-03-01` (also `/`, `.`, 年月日), `03-01` (its next occurrence after today) or `45d`
    (45 days from today). Full-width digits are read as digits.
    """
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    # ASCII digits, and full-width ones read as ASCII; any other digit (a superscript,
    # another script's) is no date typed. NFKC then only evens out the punctuation (／－).
    text = ascii_digits(text)
    if any(unicodedata.category(ch).startswith("N") and not "0" <= ch <= "9" for ch in text):
        raise ValueError(text)
    text = unicodedata.normalize("NFKC", text).strip()
    day: date
    if m := _DAYS.match(text):
        day = today + timedelta(days=int(m.group(1)))
    elif m := _FULL_DATE.match(text):
        day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    elif m := _MONTH_DAY.match(text):
        day = _next_occurrence(today, int(m.group(1)), int(m.group(2)))
    else:
        raise ValueError(text)
    return review_on(day, today, zone)


def _next_occurrence(today: date, month: int, dom: int) -> date:
    """The first `month-dom` after today (29 February: the next year that has one)."""
    for year in range(today.year, today.year + 5):
        try:
            day = date(year, month, dom)
        except ValueError:
            if not 1 <= month <= 12 or not 1 <= dom <= 31:
                raise
            continue
        if day > today:
            return day
    raise ValueError(f"{month}-{dom}")


def review_on(day: date, today: date, zone: ZoneInfo) -> datetime:
    """09:00 local on `day`, if it is within the allowed range of `today`."""
    if not MIN_DAYS <= (day - today).days <= MAX_DAYS:
        raise ValueError(day.isoformat())
    return datetime.combine(day, REVIEW_TIME, tzinfo=zone)


def review_in(days: int, now: datetime, tz: str) -> datetime:
    """The review date `days` from today: what the 30/90/180-day buttons pick."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    return review_on(today + timedelta(days=days), today, zone)


def _days_ahead(tx: Tx, review_at: datetime) -> int:
    """How many days of the registry's zone lie between today and the review date."""
    zone = ZoneInfo(tx.policy.timezone)
    return (review_at.astimezone(zone).date() - tx.now.astimezone(zone).date()).days


def on_working_day(tx: Tx, review_at: datetime) -> datetime:
    """The review date, moved to the next working day of the district's calendar when it
    falls on a day off (30 days from 09-01 is National Day: 10-08), at the same hour."""
    zone = ZoneInfo(tx.policy.timezone)
    local = review_at.astimezone(zone)
    day = tx.policy.calendar.next_working_day(local.date())
    if day == local.date():
        return review_at
    return datetime.combine(day, local.timetz()).astimezone(review_at.tzinfo)


def _valid_review(tx: Tx, review_at: datetime) -> datetime:
    """The domain's own check of a review date, whatever the handler passed; moved off a
    day off."""
    if not MIN_DAYS <= _days_ahead(tx, review_at) <= MAX_DAYS:
        raise DomainError("bad_review_date")
    return on_working_day(tx, review_at.astimezone(tx.now.tzinfo))


async def _may_ask(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> None:
    """The refusals the button and the request share: status, a pending request, nobody
    above but the requester to answer."""
    if case.status not in HANDLING:
        raise DomainError("stale", case_id=case.id)
    if case.request_at is not None:
        raise DomainError("request_pending", case_id=case.id)
    await case_requests.approvers_for(tx, case, lin, actor.id)


async def check_request(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """Whether `actor` may ask to suspend the case now (before the prompts)."""
    case = await cases.check(tx, actor, case_id, rev, EventKind.SUSPEND)
    lin = await org.lineage_of(tx.db, case.building_id, case.unit_id)
    await _may_ask(tx, actor, case, lin)
    return case


async def request(tx: Tx, actor: Actor, case_id: int, rev: int, reason: str,
                  review_at: datetime) -> CaseRequest:
    """Ask the level above to suspend the case until `review_at` (moved off a day off),
    with a reason."""
    asked = review_at
    review_at = _valid_review(tx, review_at)
    case, lin = await cases.act(tx, actor, case_id, rev, EventKind.SUSPEND)
    await _may_ask(tx, actor, case, lin)
    req = await case_requests.open_request(tx, actor, case, lin, RequestKind.SUSPENSION,
                                           reason, review_at=review_at,
                                           asked_review_at=asked)
    await cases.save(tx, case)
    return req


async def recheck(tx: Tx, case: Case, lin: Lineage, req: CaseRequest) -> None:
    """The rules of the request, again when it is approved: the review date is still at
    least MIN_DAYS ahead (approved on or after it, the case would be suspended into the past
    and resumed in the same sweep), and the requester still holds the case."""
    if not ENABLED:
        raise DomainError("lapsed_suspension_off", case_id=case.id)
    if req.review_at is None or _days_ahead(tx, req.review_at) < MIN_DAYS:
        raise DomainError("lapsed_review_passed", case_id=case.id,
                          text=tx.texts.local_time(req.review_at, "%Y-%m-%d"))
    await case_requests.requester_holds(tx, case, lin, req)


async def approve(tx: Tx, case: Case, lin: Lineage, req: CaseRequest, actor: Actor) -> None:
    """The approval hook `approvals.answer` calls: the request is already marked
    approved and `case.request_at` cleared; the caller tells the requester and saves."""
    await cases.leaving_handling(tx, case, lin)
    cases.transition(tx, case, EventKind.SUSPEND, actor.id, req.reason)
    if req.review_at is not None:
        # The calendar as it is now (a holiday declared since the request moves it too).
        req.review_at = on_working_day(tx, req.review_at)
    case.review_at = req.review_at
    case.assignee_id = None
    case.assignee_ack_at = None
    case.request_at = None
    await notify.tell_reporter(
        tx, f"case:{case.id}:r{case.round}:suspended:{req.id}", case,
        tx.texts.render("suspended_reporter", case_id=case.id,
                        category=await notify.category_name(tx, case.category),
                        reason=req.reason, review_at=req.review_at),
        private=True,
    )


async def _suspension(tx: Tx, case: Case) -> CaseRequest | None:
    """The approved request that suspended the case: its reason and who asked."""
    return await tx.db.scalar(
        select(CaseRequest).where(CaseRequest.case_id == case.id,
                                  CaseRequest.kind == RequestKind.SUSPENSION,
                                  CaseRequest.status == RequestStatus.APPROVED)
        .order_by(CaseRequest.id.desc()).limit(1))


async def _back_to_handling(tx: Tx, case: Case, lin: Lineage, action: EventKind,
                            actor_id: int | None, *, deferrable: bool) -> None:
    """Review date or resume: the case returns to its handler with a full clock from now,
    in the same round; the handler gets the card and the reporter a private word."""
    req = await _suspension(tx, case)
    reason = req.reason if req is not None else None
    review_at = case.review_at
    cases.transition(tx, case, action, actor_id)
    case.accepted_by_id = case.accepted_by_id or (req.requested_by_id if req else None)
    case.review_at = None
    case.clock_started_at = tx.now
    case.extended_seconds = 0
    # The card shows the new deadline.
    await cases.schedule(tx, case)
    await notify.handler_card(tx, case, lin, "resumed", note=reason, deferrable=deferrable)
    await notify.tell_reporter(
        tx, f"case:{case.id}:r{case.round}:resumed:{case.rev}", case,
        tx.texts.render("resumed_reporter", case_id=case.id,
                        category=await notify.category_name(tx, case.category),
                        reason=reason, review_at=review_at),
        private=True,
    )


async def review_due(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    """The SUSPEND_REVIEW step: the review date has come; back to the handler."""
    await _back_to_handling(tx, case, lin, EventKind.SUSPEND_REVIEW, None, deferrable=True)
    return step.name.value


async def resume(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """恢复办理 before the review date, from the card or `/case`."""
    case, lin = await cases.act(tx, actor, case_id, rev, EventKind.RESUME)
    if case.status != cases.CaseStatus.SUSPENDED:
        raise DomainError("stale", case_id=case.id)
    await _back_to_handling(tx, case, lin, EventKind.RESUME, actor.id, deferrable=False)
    await cases.save(tx, case)
    return case
