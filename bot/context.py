"""What every domain operation needs besides the database: the clock, texts, bot identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.org.directory import directory, org_settings
from bot.org.policy import Policy
from bot.texts import Texts


class NotConfigured(Exception):
    """No registry has been loaded yet."""


@dataclass
class Ctx:
    clock: Clock
    texts: Texts
    bot_username: str = "gridbot"
    bot_id: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def deep_link(self, payload: str) -> str:
        return f"https://t.me/{self.bot_username}?start={payload}"


@dataclass
class Tx:
    """One domain operation: a session, the policy and texts in the org's time zone, and now."""

    db: AsyncSession
    ctx: Ctx
    policy: Policy
    texts: Texts
    now: datetime


async def begin(db: AsyncSession, ctx: Ctx) -> Tx:
    row = await org_settings(db)
    if row is None:
        raise NotConfigured("load a registry first: gridbot registry load FILE.yaml")
    # The categories counting working time, from the directory org_settings just read.
    cats = (await directory(db)).categories.values()
    policy = Policy.from_row(row, (c.code for c in cats if c.sla_unit))
    return Tx(db, ctx, policy, ctx.texts.with_timezone(policy.timezone), ctx.clock.now())
