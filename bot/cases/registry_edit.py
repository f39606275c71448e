"""A registry load: the organisation's tables say what the registry says, and open cases
follow a changed SLA or policy at once, in one transaction."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import false, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.deadlines import deadline_of
from bot.cases.lifecycle import TIMER_PHASE
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
    await db.commit()
    return report


async def retime_open_cases(db: AsyncSession, now: datetime, *,
                            categories: Collection[str] = (), policy_changed: bool = False
                            ) -> int:
    """A registry load changed SLAs or the policy: open cases follow at once.

    The deadline of each open case of a changed category is derived again from its clock
    start, and the sweep is told to look at the cases concerned now, where `advance_timers`
    derives every timer from the new policy. Returns how many cases were touched.
    """
    open_cases = Case.status.in_(list(TIMER_PHASE))
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
        policy = Policy.from_row(row, (code for code, (_, unit) in sla.items() if unit))
        rows = await db.scalars(select(Case).where(open_cases,
                                                   Case.category.in_(list(sla))))
        for case in rows.all():
            length, unit = sla[case.category]
            case.deadline_at = deadline_of(policy, case.clock_started_at, length, unit,
                                           case.extended_seconds)
            case.next_check_at = now
            touched += 1
    if policy_changed:
        result = await db.execute(update(Case).where(open_cases).values(next_check_at=now)
                                  .execution_options(synchronize_session=False))
        touched = max(touched, int(getattr(result, "rowcount", 0) or 0))
    return touched
