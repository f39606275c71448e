"""The outbox seen from a terminal: what is waiting or stuck, and requeueing what failed.

Rows are shown without their text: what a message says is for the person it goes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ops.terminal import footer, local, one_line
from storage.models import Outbox

# The statuses worth looking at; "sent" and "dropped" (a reminder list whose cases had all
# moved on when its turn came: `last_error` says how) are counted, and listed when asked for.
SHOWN = ("pending", "held", "failed", "undeliverable")
COUNTED = ("sent", "dropped")
# What `retry ID` takes back: failed ones, and a group that refused the bot (re-added since).
RETRYABLE = ("failed", "undeliverable")


class OutboxError(Exception):
    """A request that cannot be carried out; one line for the person at the terminal."""


@dataclass(frozen=True)
class Row:
    id: int
    status: str
    chat_id: int
    case_id: int | None
    attempts: int
    last_error: str | None
    dedupe_key: str
    created_at: datetime


@dataclass
class Listing:
    counts: dict[str, int]
    rows: list[Row]
    more: int  # rows not listed because of the limit


async def listing(db: AsyncSession, *, status: str | None = None, limit: int = 100) -> Listing:
    """Counts per status, and the rows not yet sent (oldest first)."""
    counts = dict.fromkeys((*SHOWN, *COUNTED), 0)
    for name, count in (await db.execute(
            select(Outbox.status, func.count()).group_by(Outbox.status))).all():
        counts[name] = int(count)
    wanted = [status] if status else list(SHOWN)
    found = (await db.scalars(
        select(Outbox).where(Outbox.status.in_(wanted)).order_by(Outbox.id).limit(limit)
    )).all()
    rows = [Row(o.id, o.status, o.chat_id, o.case_id, o.attempts, o.last_error, o.dedupe_key,
                o.created_at) for o in found]
    total = sum(counts.get(s, 0) for s in wanted)
    return Listing(counts, rows, max(0, total - len(rows)))


async def retry(db: AsyncSession, now: datetime, row_id: int | None = None) -> int:
    """Requeue failed rows (or one row) to be sent now, as if never tried; commits."""
    values = {"status": "pending", "not_before": now, "retry_at": None, "attempts": 0}
    if row_id is None:
        result = await db.execute(update(Outbox).where(Outbox.status == "failed").values(values))
        await db.commit()
        return int(getattr(result, "rowcount", 0) or 0)
    row = await db.get(Outbox, row_id)
    if row is None:
        raise OutboxError(f"there is no outbox message {row_id}")
    if row.status not in RETRYABLE:
        raise OutboxError(f"outbox message {row_id} is {row.status}, not failed or "
                          "undeliverable: nothing to retry")
    await db.execute(update(Outbox).where(Outbox.id == row_id).values(values))
    await db.commit()
    return 1


def render(found: Listing, zone: ZoneInfo) -> str:
    """The listing as terminal lines: a count line, then one line per row."""
    counts = ", ".join(f"{found.counts.get(s, 0)} {s}" for s in SHOWN)
    lines = [f"outbox: {counts} ({found.counts.get('sent', 0)} sent, "
             f"{found.counts.get('dropped', 0)} dropped as stale)"]
    if not found.rows:
        return lines[0]
    lines.append(f"{'id':>6}  {'status':<13} {'chat':>15}  {'case':>6}  {'tries':>5}  "
                 f"{'created':<16}  {'dedupe key':<36}  last error")
    for r in found.rows:
        case = f"#{r.case_id}" if r.case_id is not None else "-"
        lines.append(f"{r.id:>6}  {r.status:<13} {r.chat_id:>15}  {case:>6}  {r.attempts:>5}  "
                     f"{local(r.created_at, zone):<16}  {r.dedupe_key:<36}  "
                     f"{one_line(r.last_error, 60)}")
    lines += footer(found.more, zone)
    return "\n".join(lines)
