"""The daily digest tells each grid its rounds (issue 22, point 4): yesterday's patrols (a
nudge when there were none) and its campaign tasks not done yet, with those overdue."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.ledger import digest
from storage.models import Campaign, CampaignGrid, Node, Patrol
from tests.harness import COMMUNITY_SUP, LEADER, LEADER2, MEMBER, MORNING, make_harness


async def test_the_digest_counts_yesterdays_patrols_and_open_tasks(tmp_path: Path) -> None:
    # The bot from 2026-11-23 10:00; the digest of 11-24 at 08:30.
    h = await make_harness(tmp_path)
    h.app.ctx.extra.pop(digest.OFF, None)
    try:
        async with h.app.sessions() as db:
            grid = await db.scalar(select(Node).where(Node.code == "BSY-01"))
            other = await db.scalar(select(Node).where(Node.code == "BSY-02"))
            assert grid is not None and other is not None
            day = MORNING  # 11-23 10:00 local
            db.add_all([
                Patrol(person_id=MEMBER, grid_id=grid.id, started_at=day,
                       ended_at=day + timedelta(hours=1)),
                Patrol(person_id=LEADER, grid_id=grid.id, started_at=day + timedelta(hours=3),
                       ended_at=day + timedelta(hours=4)),
                # Still under way: not counted.
                Patrol(person_id=LEADER, grid_id=grid.id, started_at=day + timedelta(hours=5)),
            ])
            soon = Campaign(title="防汛巡查", body="检查地下车库排水", photos=[],
                            sender_id=COMMUNITY_SUP, scope_node_id=grid.parent_id or grid.id,
                            deadline_at=day + timedelta(days=3), created_at=day)
            past = Campaign(title="消防检查", body="查看楼道堆放", photos=[],
                            sender_id=COMMUNITY_SUP, scope_node_id=grid.parent_id or grid.id,
                            deadline_at=day + timedelta(hours=2), created_at=day)
            db.add_all([soon, past])
            await db.flush()
            db.add_all([CampaignGrid(campaign_id=soon.id, grid_id=grid.id, status="pending",
                                     photos=[]),
                        CampaignGrid(campaign_id=past.id, grid_id=grid.id, status="pending",
                                     photos=[]),
                        CampaignGrid(campaign_id=soon.id, grid_id=other.id, status="done",
                                     photos=["p"], done_at=day, done_by_id=LEADER2)])
            await db.commit()
        await h.advance(timedelta(hours=22, minutes=31))  # 11-24 08:31 local
        mine = next(t for t in h.texts(LEADER) if "早上好" in t)
        assert "昨日巡查 2 次" in mine
        assert "专项任务待完成 2 项，已逾期 1 项" in mine
        theirs = next(t for t in h.texts(LEADER2) if "早上好" in t)
        assert "昨日巡查 0 次，今天记得巡查（/patrol）" in theirs
        assert "专项任务" not in theirs
    finally:
        await h.app.close()
