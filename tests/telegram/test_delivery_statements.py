"""What the outbox sender costs the database: statements and transactions per message.

On SQLite through aiosqlite every statement costs about a millisecond of CPU, so these
bounds are the sender's speed. Sending a row and reading the chat's next one share a
transaction; a row marked sent is not read again; a person's dm_ok is written only when it
changes; the loop looks for due chats when that may find something, not whenever a chat's
worker ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select

from bot.cases.outbox import enqueue
from storage.models import Outbox, Person
from tests.harness import BUILDING_CHAT, Harness

N = 6
FIRST_PERSON = 7770001


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    transactions: int = 0

    def of(self, fragment: str) -> int:
        return sum(fragment in s for s in self.statements)


RECALL = "outbox.sent_at >="


def claims(conn: Any) -> bool:
    return bool(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")


@contextmanager
def counting(h: Harness) -> Iterator[Counted]:
    counted = Counted()
    sync = h.app.engine.sync_engine

    # On PostgreSQL a chat's turn also claims the chat (on a connection of its own, outside
    # any transaction) and paces it by what other workers sent there: the price of sharing the
    # database, not of sending, and not counted here.
    def on_sql(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not claims(conn) and RECALL not in statement:
            counted.statements.append(" ".join(statement.split()))
        elif RECALL in statement:
            counted.transactions -= 1  # the recall's own

    def on_end(conn: Any) -> None:
        if not claims(conn):
            counted.transactions += 1

    event.listen(sync, "before_cursor_execute", on_sql)
    event.listen(sync, "commit", on_end)
    event.listen(sync, "rollback", on_end)
    try:
        yield counted
    finally:
        event.remove(sync, "before_cursor_execute", on_sql)
        event.remove(sync, "commit", on_end)
        event.remove(sync, "rollback", on_end)


async def queue(h: Harness, rows: list[tuple[int, int | None]], tag: str) -> None:
    async with h.app.sessions() as db:
        for i, (chat, person) in enumerate(rows):
            await enqueue(db, f"{tag}:{i}", chat, f"{tag} {i}", h.clock.now(), person_id=person)
        await db.commit()


async def add_people(h: Harness, n: int) -> list[int]:
    ids = [FIRST_PERSON + i for i in range(n)]
    async with h.app.sessions() as db:
        db.add_all(Person(id=i, name=f"居民{i}", created_at=h.clock.now()) for i in ids)
        await db.commit()
    return ids


async def all_sent(h: Harness) -> bool:
    async with h.app.sessions() as db:
        return set((await db.scalars(select(Outbox.status))).all()) == {"sent"}


async def test_rows_to_one_chat_cost_one_transaction_each(h: Harness) -> None:
    await queue(h, [(BUILDING_CHAT, None)] * N, "one")
    with counting(h) as c:
        await h.deliver()
    assert [m.text for m in h.api.to(BUILDING_CHAT)] == [f"one {i}" for i in range(N)]
    assert await all_sent(h)
    # Per row: BEGIN, UPDATE (marked sent), SELECT (the chat's next row). Besides: the due
    # chats of two passes (the second finds none) and the chat's first row, 2 statements
    # each. The sender before this counted 5 statements and 2 transactions a row.
    assert len(c.statements) <= 3 * N + 6, c.statements
    assert c.transactions <= N + 3
    assert c.of("UPDATE outbox") == N
    assert c.of("FROM people") == c.of("UPDATE people") == 0  # a group: nobody to look up


async def test_rows_to_many_people_cost_two_transactions_each(h: Harness) -> None:
    people = await add_people(h, N)
    await queue(h, [(p, p) for p in people], "first")
    with counting(h) as c:
        await h.deliver()
    assert all(len(h.api.to(p)) == 1 for p in people)
    # Per chat: its first row (BEGIN, SELECT with the person joined), then BEGIN, UPDATE,
    # UPDATE people (dm_ok becomes known), SELECT (its next row: none). The sender before
    # this counted 10 statements and 3 transactions a chat.
    assert len(c.statements) <= 6 * N + 4, c.statements
    assert c.transactions <= 2 * N + 2
    assert c.of("UPDATE people") == N
    async with h.app.sessions() as db:
        assert set(await db.scalars(select(Person.dm_ok).where(Person.id.in_(people)))) \
            == {True}

    # dm_ok is known now: it is not written again.
    await queue(h, [(p, p) for p in people], "second")
    with counting(h) as c:
        await h.deliver()
    assert all(len(h.api.to(p)) == 2 for p in people)
    assert await all_sent(h)
    assert len(c.statements) <= 5 * N + 4, c.statements
    assert c.transactions <= 2 * N + 2
    # Joined to the row read, never read or written alone.
    assert c.of("FROM people") == c.of("UPDATE people") == 0


async def test_the_loop_looks_for_due_chats_once_when_its_workers_run_out(
        h: Harness) -> None:
    """Workers that sent their chats' last rows do not each send the loop looking again."""
    people = await add_people(h, N)
    await queue(h, [(p, p) for p in people], "run")
    stop = asyncio.Event()
    with counting(h) as c:
        loop = asyncio.create_task(h.app.delivery.run(stop, tick=60))
        deadline = time.monotonic() + 10
        while not await all_sent(h):
            assert time.monotonic() < deadline, "not delivered"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the workers end
        looked = c.of("GROUP BY outbox.chat_id")
        stop.set()
        h.app.delivery.wake()
        await asyncio.wait_for(loop, 10)
    assert all(len(h.api.to(p)) == 1 for p in people)
    # Once, when it started; the sender before this looked again as each worker ended.
    assert looked == 1
