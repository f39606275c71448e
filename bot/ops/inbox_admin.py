"""The inbox seen from a terminal: updates set aside or failed, and taking them back.

Rows are shown without their content: what people wrote is not for the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ops.terminal import footer, local, one_line
from storage.models import InboxUpdate

# The statuses worth looking at, and every status counted in the summary line.
SHOWN = ("set_aside", "failed")
COUNTED = ("new", "done", "skipped", "set_aside", "failed", "erased")


class InboxError(Exception):
    """A request that cannot be carried out; one line for the person at the terminal."""


@dataclass(frozen=True)
class Row:
    id: int
    update_id: int | None
    status: str
    kind: str | None
    received_at: datetime
    attempts: int
    reason: str | None


@dataclass
class Listing:
    counts: dict[str, int]
    rows: list[Row]
    more: int  # rows not listed because of the limit


async def listing(db: AsyncSession, *, status: str | None = None, limit: int = 100) -> Listing:
    """Counts per status, and the set-aside and failed updates (oldest first)."""
    counts = dict.fromkeys(COUNTED, 0)
    for name, count in (await db.execute(
            select(InboxUpdate.status, func.count()).group_by(InboxUpdate.status))).all():
        counts[name] = int(count)
    wanted = [status] if status else list(SHOWN)
    found = (await db.scalars(
        select(InboxUpdate).where(InboxUpdate.status.in_(wanted)).order_by(InboxUpdate.id)
        .limit(limit))).all()
    rows = [Row(u.id, u.update_id, u.status, u.kind, u.received_at, u.attempts, u.reason)
            for u in found]
    total = sum(counts.get(s, 0) for s in wanted)
    return Listing(counts, rows, max(0, total - len(rows)))


async def retry(db: AsyncSession, row_id: int | None = None) -> int:
    """Hand set-aside and failed updates (or one) to the handlers again; commits.

    For after an upgrade of Gridbot (or its client library) that can read them, or a fix of
    what made their handler fail. A running bot picks them up within a second.
    """
    values = {"status": "new", "attempts": 0, "reason": None}
    if row_id is None:
        # Few rows, and a JSON column may hold SQL NULL or JSON null: filtered here.
        stuck = (await db.scalars(select(InboxUpdate).where(InboxUpdate.status.in_(SHOWN)))).all()
        ids = [row.id for row in stuck if row.payload is not None]
        if ids:
            await db.execute(update(InboxUpdate).where(InboxUpdate.id.in_(ids)).values(values))
        await db.commit()
        return len(ids)
    row = await db.get(InboxUpdate, row_id)
    if row is None:
        raise InboxError(f"there is no inbox row {row_id}")
    if row.status not in SHOWN:
        raise InboxError(f"inbox row {row_id} is {row.status}, not set aside or failed: "
                         "nothing to retry")
    if row.payload is None:
        raise InboxError(f"inbox row {row_id} was not kept with its content: it cannot be "
                         "handled again")
    await db.execute(update(InboxUpdate).where(InboxUpdate.id == row_id).values(values))
    await db.commit()
    return 1


def render(found: Listing, zone: ZoneInfo) -> str:
    """The listing as terminal lines: a count line, then one line per row."""
    counts = ", ".join(f"{found.counts.get(s, 0)} {s.replace('_', ' ')}" for s in COUNTED)
    lines = [f"inbox: {counts}"]
    if not found.rows:
        return lines[0]
    lines.append(f"{'id':>8}  {'update_id':>12}  {'status':<10} {'kind':<20} "
                 f"{'received':<16}  {'tries':>5}  reason")
    for r in found.rows:
        update_id = str(r.update_id) if r.update_id is not None else "-"
        lines.append(f"{r.id:>8}  {update_id:>12}  {r.status:<10} {(r.kind or '-'):<20} "
                     f"{local(r.received_at, zone):<16}  {r.attempts:>5}  "
                     f"{one_line(r.reason, 80)}")
    lines += footer(found.more, zone)
    return "\n".join(lines)
