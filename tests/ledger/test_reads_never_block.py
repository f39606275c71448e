"""Issue 19, defect 7: an export held the write lock for its whole run (every SQLite
transaction began IMMEDIATE), so a resident's /report waited behind it. Long reads (figures,
exports, listings) run in read transactions that never block a writer."""

from __future__ import annotations

import asyncio
import io

from sqlalchemy import select, update

from bot.ledger.definitions import Period
from bot.ledger.export import write_ledger
from storage.db import reading
from storage.models import Case, Person
from tests.harness import BUILDING_CHAT, RESIDENT, Harness

# Far below the 30 s busy timeout a blocked writer would wait: a write that has to wait for
# the reader fails this bound.
QUICK = 3.0


async def test_a_write_goes_through_while_a_read_transaction_is_open(h: Harness) -> None:
    async with h.app.sessions() as db, reading(db) as reader:
        # The reader has begun and read: on SQLite it holds a snapshot, on PostgreSQL a
        # REPEATABLE READ, READ ONLY transaction.
        assert (await reader.scalar(select(Person.id).limit(1))) is not None
        async with h.app.sessions() as writer:
            await asyncio.wait_for(writer.execute(
                update(Person).where(Person.id == -1).values(name="x")), QUICK)
            await asyncio.wait_for(writer.commit(), QUICK)


async def test_a_read_transaction_refuses_to_write(h: Harness) -> None:
    """A read is a read: a write slipped into one fails instead of taking the lock."""
    async with h.app.sessions() as db, reading(db) as reader:
        await reader.scalar(select(Person.id).limit(1))
        try:
            await reader.execute(update(Person).where(Person.id == -1).values(name="x"))
            await reader.flush()
        except Exception:
            return
        raise AssertionError("a write in a read transaction went through")


async def test_a_report_is_answered_while_the_ledger_is_being_written(
        h: Harness) -> None:
    """The 台账 streams its rows in a read transaction: a resident's report made while the
    export is in the middle of its rows is filed and answered at once."""
    for n in range(3):
        await h.say(BUILDING_CHAT, RESIDENT + n, f"/report 楼道里堆放杂物第{n}处")
    async with h.app.sessions() as db:
        reported = len((await db.scalars(select(Case.id))).all())
    assert reported >= 1
    period = Period.month_of(h.clock.now(), "Asia/Shanghai")
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def export() -> int:
        async with h.app.sessions() as db, reading(db) as reader:
            # The read transaction has begun and read; it stays open while the report comes.
            await reader.scalar(select(Case.id).limit(1))
            started.set()
            await go_on.wait()
            return await write_ledger(reader, period, None, io.BytesIO(), "csv", "zh_CN",
                                      now=h.clock.now())

    task = asyncio.create_task(export())
    await started.wait()
    await asyncio.wait_for(h.say(BUILDING_CHAT, RESIDENT + 9, "/report 电梯按钮失灵"), QUICK)
    go_on.set()
    rows = await task
    async with h.app.sessions() as db:
        filed = await db.scalar(select(Case.id).where(Case.description == "电梯按钮失灵"))
    assert filed is not None
    # …and acknowledged in the group while the export was still open.
    assert any(f"#{filed}" in t and "已收到" in t for t in h.texts(BUILDING_CHAT))
    # The ledger read its snapshot: the cases before it, not the one reported during it.
    assert rows == reported
