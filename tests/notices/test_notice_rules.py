"""Notices that can be followed to the end (issue 20, defects 9 and 10), through the real
Dispatcher:

- a place with a group but nobody to confirm (the sample registry's 12号楼 has no head) is
  named in the preview, counted apart in the summary and the list, never keeps a notice from
  being complete, and 提醒未确认 says who was reminded and which places have nobody;
- the last two 已阅 pressed at once, in two sessions of their own: one of the two always sees
  both, and the sender is told 已全部确认 once (on PostgreSQL too, where each used to count the
  other as unread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.util import await_only

from tests.harness import (
    BUILDING5_CHAT,
    BUILDING12_CHAT,
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    HEAD5,
    LEADER,
    LEADER2,
    UNIT_CHAT,
    UNIT_HEAD,
    Harness,
)
from tests.notices.test_notices import TEXT, copies, notice_in, send_to_grid


async def send_to_community(h: Harness) -> None:
    """柏树郢社区: 3号楼, its unit 1, 5号楼 (each with a head) and 12号楼 (none)."""
    await h.private(COMMUNITY_SUP, "/notice")
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "柏树郢社区")
    assert "将发送到 4 个群" in h.last(COMMUNITY_SUP).text
    await h.private(COMMUNITY_SUP, TEXT)
    preview = h.last(COMMUNITY_SUP)
    assert "将发送到 4 个群" in preview.text
    # The sender learns before sending that 12号楼 has nobody to confirm it.
    assert "12号楼" in preview.text and "无人确认" in preview.text, preview.text
    assert "5号楼" not in preview.text.split("将发送到")[1]
    await h.press(COMMUNITY_SUP, preview, "发送")


async def test_a_place_with_nobody_to_confirm_is_counted_apart(h: Harness) -> None:
    await h.private(HEAD5, "/start")
    await h.private(UNIT_HEAD, "/start")
    await send_to_community(h)
    notice_in(h, BUILDING12_CHAT)  # its residents read it all the same
    assert len(await copies(h)) == 4
    summary = h.last(COMMUNITY_SUP)
    # Three groups can confirm; 12号楼 is counted apart, not as "not yet".
    assert "已确认 0/3 个群" in summary.text, summary.text
    assert "未确认：3号楼、3号楼 1、5号楼" in summary.text
    assert "1 个群无人确认" in summary.text and "12号楼" in summary.text
    assert summary.labels == ["刷新", "提醒未确认"]

    await h.press(HEAD, notice_in(h, BUILDING_CHAT), "已阅")  # type: ignore[arg-type]
    assert h.answers()[-1] == "已确认，谢谢！（已确认 1/3）"

    # 提醒未确认 names who was reminded, for which place, and who could not be.
    await h.press(COMMUNITY_SUP, summary, "提醒未确认")
    said = h.answers()[-1]
    assert "已私信提醒 2 位负责人" in said, said
    assert "单元长丁（3号楼 1）" in said and "楼栋长己（5号楼）" in said, said
    assert "12号楼" in said and "无人可提醒" in said, said
    assert len(said) <= 200  # an alert holds 200 characters
    assert "已确认 1/3 个群" in summary.text and "上次提醒" in summary.text
    assert any(TEXT in t for t in h.texts(HEAD5)) and any(TEXT in t for t in h.texts(UNIT_HEAD))

    await h.press(UNIT_HEAD, notice_in(h, UNIT_CHAT), "已阅")  # type: ignore[arg-type]
    await h.press(HEAD5, notice_in(h, BUILDING5_CHAT), "已阅")  # type: ignore[arg-type]
    assert h.answers()[-1] == "已确认，谢谢！（已确认 3/3）"
    # Complete: every group that can confirm has; the sender is told, once, with 12号楼.
    done = [t for t in h.texts(COMMUNITY_SUP) if "已全部确认" in t]
    assert len(done) == 1 and "（3/3）" in done[0] and "1 个群" in done[0], done
    await h.press(COMMUNITY_SUP, summary, "刷新")
    assert "已确认 3/3 个群，全部确认" in summary.text, summary.text
    assert "1 个群无人确认" in summary.text and "未确认：" not in summary.text
    assert summary.labels == ["刷新"]  # nobody is left to remind
    await h.private(COMMUNITY_SUP, "/notices")
    listed = h.last(COMMUNITY_SUP).text
    assert "已确认 3/3" in listed and "1 个群无人确认" in listed, listed


async def test_a_notice_only_to_places_with_nobody_to_confirm(h: Harness) -> None:
    """柏树郢第二网格 has one bound group, 12号楼, and nobody to confirm there: never "0/1 for
    ever", never 「已私信提醒 0 位负责人」."""
    await h.private(LEADER2, "/notice")
    await h.press(LEADER2, h.last(LEADER2), "柏树郢第二网格")
    await h.private(LEADER2, TEXT)
    preview = h.last(LEADER2)
    assert "12号楼" in preview.text and "无人确认" in preview.text, preview.text
    await h.press(LEADER2, preview, "发送")
    notice_in(h, BUILDING12_CHAT)
    summary = h.last(LEADER2)
    assert "0/1" not in summary.text, summary.text
    assert "12号楼" in summary.text and "无人确认" in summary.text
    assert summary.labels == ["刷新"]
    # 提醒未确认 from an older summary (or a forged press): nobody to remind, and why.
    data = f"n2:{(await copies(h))[0].notice_id}:m"
    await h.press_data(LEADER2, data, summary)
    said = h.answers()[-1]
    assert "0 位" not in said and "12号楼" in said and "无人可提醒" in said, said
    assert not any("已全部确认" in t for t in h.texts(LEADER2))


async def test_reminded_people_are_named_with_their_places(h: Harness) -> None:
    """In a grid where every group has a head: the reminder names each, with the place."""
    await h.private(HEAD, "/start")
    await send_to_grid(h, photo=None)
    summary = h.last(LEADER)
    await h.press(LEADER, summary, "提醒未确认")
    said = h.answers()[-1]
    assert said == ("已私信提醒 3 位负责人："
                    "楼栋长丙（3号楼）、单元长丁（3号楼 1）、楼栋长己（5号楼）。")


# --- the last two 已阅 at once ----------------------------------------------------------------


class Meeting:
    """Two tasks meet at a point: the first waits (up to `wait` seconds) for the second."""

    def __init__(self, wait: float) -> None:
        self.arrived = 0
        self.both = asyncio.Event()
        self.wait = wait

    async def meet(self) -> None:
        self.arrived += 1
        if self.arrived >= 2:
            self.both.set()
        with suppress(TimeoutError):
            await asyncio.wait_for(self.both.wait(), self.wait)


@contextmanager
def confirmations_meet(h: Harness, wait: float = 1.5) -> Iterator[list[Meeting]]:
    """Two confirmations as close together as the database lets them be: each, once it has
    written its copy (UPDATE notice_copies), waits for the other to have written its own, and
    again before its COMMIT for the other to reach its COMMIT. Where the code lets them run
    side by side, both write and count before either commits; where one must wait for the
    other (a lock), the first goes on after `wait` seconds at each point."""
    written, committing = Meeting(wait), Meeting(wait)

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE NOTICE_COPIES "):
            conn.info["confirming"] = True
            await_only(written.meet())

    def commit(conn: Any) -> None:
        if conn.info.pop("confirming", False):
            await_only(committing.meet())

    engine = h.app.engine.sync_engine
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "commit", commit)
    try:
        yield [written, committing]
    finally:
        event.remove(engine, "after_cursor_execute", after)
        event.remove(engine, "commit", commit)


async def test_the_last_two_confirmations_at_once_complete_the_notice(h: Harness) -> None:
    await send_to_grid(h, photo=None)
    await h.press(HEAD, notice_in(h, BUILDING_CHAT), "已阅")  # type: ignore[arg-type]
    unit, building5 = notice_in(h, UNIT_CHAT), notice_in(h, BUILDING5_CHAT)
    presses = [h.updates.callback(who, sent.button_data("已阅"), sent)  # type: ignore[attr-defined]
               for who, sent in ((UNIT_HEAD, unit), (HEAD5, building5))]
    with confirmations_meet(h) as meetings:
        # Two updates handled side by side, each in a session (a connection) of its own.
        await asyncio.gather(*(h.app.dp.feed_raw_update(h.app.bot, p) for p in presses))
    assert [m.arrived for m in meetings] == [2, 2]
    await h.deliver()
    got = await copies(h)
    assert [c.confirmed_by_id for c in got] == [HEAD, UNIT_HEAD, HEAD5]
    answers = sorted(h.answers()[-2:])
    assert answers == ["已确认，谢谢！（已确认 2/3）", "已确认，谢谢！（已确认 3/3）"], answers
    done = [t for t in h.texts(LEADER) if "已全部确认" in t]
    assert len(done) == 1 and "（3/3）" in done[0], h.texts(LEADER)
