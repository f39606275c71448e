"""The registry kept in memory between updates (bot.org.directory): read once, used by every
update, and read again as soon as anything changed it, in this worker or another."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bot.cases.outbox import follow_migration
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    LEADER2,
    RESIDENT,
    RESIDENT2,
    Harness,
    make_harness,
)
from tests.test_access import reload, swapped_leaders

MIGRATED = -1009200009103


@contextmanager
def statements(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    sync = h.app.engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_sql)
    try:
        yield seen
    finally:
        event.remove(sync, "before_cursor_execute", on_sql)


def read_from(statement: str) -> str | None:
    """The table a SELECT reads from (its first FROM)."""
    found = re.search(r"\bFROM\s+\"?(\w+)", statement, re.IGNORECASE)
    return found.group(1) if found and statement.upper().startswith("SELECT") else None


async def second_worker(h: Harness, tmp_path: Path) -> Harness:
    """Another worker on the same database (it loads no registry of its own)."""
    return await make_harness(tmp_path, load=False, api=h.api, clock=h.clock)


async def test_an_update_reads_no_registry_table_once_the_registry_is_known(h: Harness) -> None:
    await h.report_in_group("楼道灯坏了")
    with statements(h) as seen:
        case = await h.report_in_group("墙面渗水", user=RESIDENT2)
        await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert h.card(LEADER, case.id)
    # People are read with the roles that name them; places, roles and categories alone are
    # not read at all.
    registry = [s for s in seen if read_from(s) in ("nodes", "roles", "categories")]
    assert registry == [], registry
    # The report and the verify tap, handled and their messages delivered: 69 statements
    # with the directory (handling alone: 25 and 23), 109 before it.
    assert len(seen) <= 75, len(seen)


async def test_another_workers_registry_load_is_seen_at_the_next_update(
        h: Harness, tmp_path: Path) -> None:
    await h.report_in_group("先报一件，本进程记下名册")
    other = await second_worker(h, tmp_path)
    try:
        await reload(other, swapped_leaders())
    finally:
        await other.app.close()
    case = await h.report_in_group("楼道灯坏了")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    # The grid's leader is now 920011: the card goes to them, not to the one this worker
    # knew before.
    assert h.card(LEADER2, case.id)
    assert not any(f"#{case.id}" in t for t in h.texts(LEADER))


async def test_a_group_migrated_in_another_worker_reports_at_once(
        h: Harness, tmp_path: Path) -> None:
    await h.report_in_group("先报一件")
    other = await second_worker(h, tmp_path)
    try:
        async with other.app.sessions() as db:
            await follow_migration(db, BUILDING_CHAT, MIGRATED)
            await db.commit()
    finally:
        await other.app.close()
    case = await h.report_in_group("迁移后的群报事", chat=MIGRATED)
    assert case.source_chat_id == MIGRATED
    assert h.card(HEAD, case.id)


async def test_a_change_rolled_back_leaves_the_registry_as_it_was(h: Harness) -> None:
    await h.report_in_group("先报一件")
    async with h.app.sessions() as db:
        await follow_migration(db, BUILDING_CHAT, MIGRATED)
        await db.rollback()
    before = len(await h.cases())
    await h.say(MIGRATED, RESIDENT, "/report 这个群没有绑定")
    assert len(await h.cases()) == before
    case = await h.report_in_group("原来的群照常")
    assert case.source_chat_id == BUILDING_CHAT and h.card(HEAD, case.id)
