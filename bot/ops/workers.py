"""The worker processes sharing one database, seen through their sweeps.

Telegram's limit of about 30 messages a second is per bot, not per process: with two workers
each pacing itself to the whole of it, a burst would be answered 429. Each sweep records that
its worker is alive and counts the workers seen lately; the sender then paces itself to its
share. A worker that stops removes its row; one that dies is no longer counted once it has
missed a few sweeps.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import WorkerSeen

log = logging.getLogger(__name__)
# A row not seen for this long belongs to a worker long gone: deleted.
FORGET_AFTER = timedelta(days=1)


def new_worker_id() -> str:
    """host:pid:random — unique even when a pid is reused after a restart."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def alive_within(sweep_seconds: float) -> timedelta:
    """How recently a worker's sweep must have run for it to count: three sweeps and a few
    seconds. Short, so that a worker killed and restarted is not counted twice for long."""
    return timedelta(seconds=3 * sweep_seconds + 10)


async def heartbeat(sessions: async_sessionmaker[AsyncSession], worker_id: str, now: datetime,
                    alive: timedelta) -> int:
    """Marks this worker seen now; returns how many workers were seen within `alive`
    (this one included)."""
    async with sessions() as db:
        seen = await db.execute(update(WorkerSeen).where(WorkerSeen.id == worker_id)
                                .values(seen_at=now))
        if not getattr(seen, "rowcount", 0):
            db.add(WorkerSeen(id=worker_id, started_at=now, seen_at=now))
        await db.execute(delete(WorkerSeen).where(WorkerSeen.seen_at < now - FORGET_AFTER))
        count = await db.scalar(select(func.count()).select_from(WorkerSeen)
                                .where(WorkerSeen.seen_at >= now - alive))
        await db.commit()
    return max(1, int(count or 0))


async def leave(sessions: async_sessionmaker[AsyncSession], worker_id: str) -> None:
    """This worker stops: the others take up its share at their next sweep."""
    try:
        async with sessions() as db:
            await db.execute(delete(WorkerSeen).where(WorkerSeen.id == worker_id))
            await db.commit()
    except Exception as exc:  # it will simply stop being counted after a few sweeps
        log.warning("could not remove this worker's row (%s)", type(exc).__name__)
