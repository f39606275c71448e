"""A registry load: the organisation's tables say what the registry says, and open cases
follow a changed SLA, calendar or urgency at once, in one transaction, as far as the
record allows: a result already recorded keeps the deadline it was judged against, and no
edit changes a figure of a period that has ended (issue 19, defect 2)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import exists, false, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.cases.deadlines import RUNNING, deadline_of, hold_deadline, move_deadline, offset
from bot.cases.status import OPEN_STATUSES
from bot.clock import Clock
from bot.org.policy import Policy
from bot.org.registry import ApplyReport, RegistryModel, write_registry
from storage.models import Case, Category, OrgSettings


async def apply_registry(db: AsyncSession, model: RegistryModel, clock: Clock) -> ApplyReport:
    """Make the database say what the registry says; the caller's transaction is committed
    here. Open cases follow a changed SLA or policy now, not at their next transition."""
    report = await write_registry(db, model, clock)
    await retime_open_cases(db, clock.now(), categories=report.changed_categories,
                            policy_changed=report.policy_changed)
    await follow_urgency(db)
    await db.commit()
    return report


async def retime_open_cases(db: AsyncSession, now: datetime, *,
                            categories: Collection[str] = (), policy_changed: bool = False
                            ) -> int:
    """A registry load changed SLAs or the policy: open cases follow at once.

    Only cases whose deadline runs (deadlines.RUNNING: no result recorded, not suspended)
    are retimed: the deadline of each of a changed category (or, after a policy change, of
    one counting working time) is derived again from its clock start, and moved there by
    `move_deadline`: a deadline that has passed stays, and none goes into the past, so no
    figure of an ended period changes. A resolved or checking case keeps the deadline its
    result is judged against. The sweep is told to look at the cases concerned now, where
    `advance_timers` derives every timer from the new policy. Returns how many cases were
    touched.
    """
    running = Case.status.in_(list(RUNNING))
    touched = 0
    # A changed policy may be a changed working calendar: the cases counting working time
    # get their deadline again too, not only at the sweep.
    changed = or_(Category.code.in_(list(categories)),
                  Category.sla_unit != "" if policy_changed else false())
    row = await db.get(OrgSettings, 1) if categories or policy_changed else None
    if row is not None:
        sla = {code: (timedelta(seconds=seconds), unit) for code, seconds, unit in (
            await db.execute(select(Category.code, Category.sla_seconds, Category.sla_unit)
                             .where(changed))).all()}
        working = (await db.scalars(select(Category.code).where(Category.sla_unit != ""))).all()
        policy = Policy.from_row(row, working)
        rows = await db.scalars(select(Case).where(running, Case.category.in_(list(sla))))
        for case in rows.all():
            length, unit = sla[case.category]
            derived = deadline_of(policy, case.clock_started_at, length, unit,
                                  case.extended_seconds)
            after, _ = move_deadline(case.deadline_at, derived + offset(case), now, later=True)
            hold_deadline(case, after, derived)
            case.next_check_at = now
            touched += 1
    if policy_changed:
        open_cases = Case.status.in_(list(OPEN_STATUSES))
        result = await db.execute(update(Case).where(open_cases).values(next_check_at=now)
                                  .execution_options(synchronize_session=False))
        touched = max(touched, int(getattr(result, "rowcount", 0) or 0))
    return touched


async def follow_urgency(db: AsyncSession) -> int:
    """Urgency follows the current category (issue 19, defect 9): a category made urgent,
    or no longer urgent, carries its open cases with it, except that a case into which an
    urgent case was merged stays urgent (issue 20, defect 3). Returns how many changed."""
    changed = 0
    merged = aliased(Case)
    took_urgent = exists().where(merged.merged_into_id == Case.id, merged.urgent.is_(True))
    for urgent in (True, False):
        codes = select(Category.code).where(Category.urgent == urgent)
        result = await db.execute(
            update(Case).where(Case.status.in_(list(OPEN_STATUSES)), Case.category.in_(codes),
                               Case.urgent != urgent, true() if urgent else ~took_urgent)
            .values(urgent=urgent).execution_options(synchronize_session=False))
        changed += int(getattr(result, "rowcount", 0) or 0)
    return changed
