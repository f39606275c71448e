"""One periodic loop for albums, and a claim that cannot double (issue 6): an album is
finished by `App.tick` alone, and its parts are claimed with `DELETE … RETURNING` in the
transaction that files its case, so no number of loops or workers files it twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from bot.cases.albums import finish_albums
from storage.models import CasePhoto, PendingPhoto
from tests.harness import BUILDING_CHAT, RESIDENT, RESIDENT2, UNIT_CHAT, Harness


async def send_album(h: Harness, chat: int, user: int, group: str, parts: int) -> int:
    """The album's parts, the first captioned `/report`; returns that part's message id."""
    first = await h.say(chat, user, photo=f"{group}-0", caption=f"/report 相册{group}",
                        media_group_id=group)
    for i in range(1, parts):
        await h.say(chat, user, photo=f"{group}-{i}", media_group_id=group)
    return int(first["message_id"])


async def photo_count(h: Harness, case_id: int) -> int:
    async with h.app.sessions() as db:
        return int(await db.scalar(
            select(func.count()).select_from(CasePhoto).where(CasePhoto.case_id == case_id))
            or 0)


async def test_the_sweep_leaves_albums_to_the_tick(h: Harness) -> None:
    await send_album(h, BUILDING_CHAT, RESIDENT, "g1", 3)
    h.clock.advance(timedelta(seconds=5))
    assert await h.app.sweep() == 0
    assert await h.cases() == []  # one loop finishes albums, and it is not the sweep
    await h.app.tick()
    [case] = await h.cases()
    assert await photo_count(h, case.id) == 3


async def test_concurrent_finish_passes_file_each_album_once(h: Harness) -> None:
    await send_album(h, BUILDING_CHAT, RESIDENT, "a", 4)
    await send_album(h, UNIT_CHAT, RESIDENT2, "b", 2)
    h.clock.advance(timedelta(seconds=5))
    # Four passes over the same settled albums at once, each with sessions of its own, as
    # two loops or two workers would run them.
    made = await asyncio.gather(*(finish_albums(h.app.sessions, h.app.ctx) for _ in range(4)))
    assert sum(made) == 2
    cases = await h.cases()
    assert sorted(c.description for c in cases) == ["相册a", "相册b"]
    assert sorted([await photo_count(h, c.id) for c in cases]) == [2, 4]
    async with h.app.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(PendingPhoto)) == 0
    await h.advance(timedelta(seconds=5))
    assert len(await h.cases()) == 2
    acks = [t for t in h.texts(BUILDING_CHAT) + h.texts(UNIT_CHAT) if "已收到您的诉求" in t]
    assert len(acks) == 2


async def test_refused_album_is_answered_once(h: Harness) -> None:
    for i in range(5):
        h.clock.advance(timedelta(seconds=30))
        await h.say(BUILDING_CHAT, RESIDENT, f"/report 第{i + 1}件")
    asked = await send_album(h, BUILDING_CHAT, RESIDENT, "late", 2)
    h.clock.advance(timedelta(seconds=5))
    made = await asyncio.gather(*(finish_albums(h.app.sessions, h.app.ctx) for _ in range(3)))
    await h.deliver()
    assert sum(made) == 0 and len(await h.cases()) == 5
    refusals = [s for s in h.api.to(BUILDING_CHAT) if s.reply_to == asked]
    assert len(refusals) == 1 and "分钟内已反映" in refusals[0].text
    async with h.app.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(PendingPhoto)) == 0
