"""The periodic sweep: reminders, escalations, timeouts that have fallen due, then the
reminders gathered into one list per person (bot/cases/reminders.py).

Albums are not finished here but in `App.tick` alone: one loop for them.

Each due case is handled in a transaction of its own, so one bad case cannot hold back the
rest, and what a case has been sent is recorded with the messages in the same commit: a
restart repeats nothing and forgets nothing.

Several workers may sweep one PostgreSQL at once: each takes a case with
`FOR UPDATE SKIP LOCKED` in the transaction that takes its steps, so a case another worker
(or a handler) is busy with is left to it instead of waited for, and the steps recorded in
`case_timer_steps` are read only after the lock: a step is never taken twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases import duplicates, reminders
from bot.cases import lifecycle as cases
from bot.context import Ctx, NotConfigured, Tx, begin
from storage.models import Case

log = logging.getLogger(__name__)


# A periodic job beside the cases' timers (the daily digest, the monthly score): run in the
# sweep's first transaction, it returns how many messages it wrote (0 and no statement when
# nothing is due). The app passes them in: they live in rooms above this one.
PeriodicJob = Callable[[Tx], Awaitable[int]]


async def sweep(sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                periodic: Sequence[PeriodicJob] = ()) -> int:
    """Run everything due now; returns how many timer steps were taken."""
    steps = 0
    try:
        async with sessions() as db:
            tx = await begin(db, ctx)
            due = await cases.due_cases(tx)
            # 是同一问题 questions nobody answered in time: their reports are filed now.
            offers = await duplicates.due(tx)
            for job in periodic:
                steps += await job(tx)
    except NotConfigured:
        return 0
    for case_id in due:
        try:
            async with sessions() as db:
                tx = await begin(db, ctx)
                case = await db.get(Case, case_id, with_for_update={"skip_locked": True})
                if case is None or case.next_check_at is None or case.next_check_at > tx.now:
                    continue
                done = await cases.advance_timers(tx, case)
                await db.commit()
                steps += len(done)
                if done:
                    log.info("case #%s: %s", case_id, ", ".join(done))
        except Exception:
            log.exception("sweep failed for case #%s; it is retried on the next sweep", case_id)
    for offer_id in offers:
        try:
            if await duplicates.settle(sessions, ctx, offer_id):
                steps += 1
        except Exception:
            log.exception("sweep failed for duplicate offer %s; it is retried on the next sweep",
                          offer_id)
    # Last: the reminders the steps above made owed go out as one list per person (lists
    # are messages, not timer steps: not counted in what the sweep returns).
    try:
        lists = await reminders.gather(sessions, ctx)
        if lists:
            log.info("%s reminder list%s written", lists, "s" if lists != 1 else "")
    except Exception:
        log.exception("gathering reminders failed; they wait for the next sweep")
    return steps
