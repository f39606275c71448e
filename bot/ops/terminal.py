"""Listings for the terminal (`gridbot outbox`, `gridbot inbox`): the pieces they share."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OrgSettings

TIME_FORMAT = "%Y-%m-%d %H:%M"


def one_line(text: str | None, width: int) -> str:
    """A free text (an error, a reason) on one line: blanks folded, cut with … past `width`."""
    line = " ".join((text or "-").split())
    return line if len(line) <= width else line[:width - 1] + "…"


def local(when: datetime, zone: ZoneInfo) -> str:
    return when.astimezone(zone).strftime(TIME_FORMAT)


def footer(more: int, zone: ZoneInfo) -> list[str]:
    """What closes a listing: how many rows the limit left out, and the zone of its times."""
    lines = [f"… and {more} more (use --limit)"] if more else []
    return [*lines, f"times in {zone.key}"]


async def local_zone(db: AsyncSession) -> ZoneInfo:
    """The registry's time zone, for the times people read; UTC before a registry is loaded."""
    settings = await db.get(OrgSettings, 1)
    return ZoneInfo(settings.timezone if settings is not None else "UTC")
