"""Digests at the right time (issue 21, point 5): after the bot was down overnight the daily
digest arrived at 15:30 saying 早上好. A digest or score sent more than two hours after its
moment goes once, dated and marked 补发, without the greeting; one whose day is over is never
sent, and the next day's goes on time with its greeting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.harness import COMMUNITY_SUP, LEADER, STREET_SUP, Harness
from tests.ledger.test_digest import load, local, make_harness, policy


def digest_texts(h: Harness, chat: int) -> list[str]:
    return [t for t in h.texts(chat) if "待办" in t]


async def restart(h: Harness, tmp_path: Path, delta: timedelta) -> Harness:
    """The bot stopped now and started `delta` later: no sweep ran in between."""
    await h.app.close()
    h.clock.advance(delta)
    again = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
    await again.advance(timedelta(seconds=1))
    return again


async def test_down_overnight_the_digest_comes_at_1530_dated_without_greeting(
        tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 23, 9, 0))
    try:
        await h.advance(timedelta(seconds=1))
        assert len(digest_texts(h, LEADER)) == 1  # the 23rd's, on time
        await h.advance(local(11, 23, 22, 0) - h.clock.now())
        # Down from 22:00 until 15:30 the next day: the 08:30 digest is seven hours late.
        h = await restart(h, tmp_path, local(11, 24, 15, 30) - h.clock.now())
        [_, late] = digest_texts(h, LEADER)
        assert "早上好" not in late
        assert late.startswith("<b>11月24日待办（补发）</b>")
        assert "原定 08:30 发送，系统暂停后补发" in late
        community = digest_texts(h, COMMUNITY_SUP)[-1]
        assert "早上好" not in community and "11月24日各网格待办（补发）" in community
        # Once: later sweeps and another restart the same day send nothing more.
        await h.advance(timedelta(hours=3))
        h = await restart(h, tmp_path, timedelta(minutes=10))
        assert len(digest_texts(h, LEADER)) == 2
        # The next day's goes on time, with its greeting.
        await h.advance(local(11, 25, 8, 30) - h.clock.now())
        [_, _, on_time] = digest_texts(h, LEADER)
        assert on_time.startswith("<b>早上好！2026-11-25 今日待办</b>")
        assert "补发" not in on_time
    finally:
        await h.app.close()


async def test_within_two_hours_it_is_still_the_morning_digest(tmp_path: Path) -> None:
    # Started at 10:30, two hours after 08:30: on time, greeting and all.
    h = await make_harness(tmp_path, start=local(11, 24, 10, 30))
    try:
        await h.advance(timedelta(seconds=0))
        [text] = digest_texts(h, LEADER)
        assert text.startswith("<b>早上好！2026-11-24 今日待办</b>") and "补发" not in text
    finally:
        await h.app.close()


async def test_a_minute_past_two_hours_it_is_late(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 10, 31))
    try:
        await h.advance(timedelta(seconds=0))
        [text] = digest_texts(h, LEADER)
        assert "早上好" not in text and text.startswith("<b>11月24日待办（补发）</b>")
    finally:
        await h.app.close()


async def test_a_day_missed_whole_is_not_sent_the_next_day(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 23, 9, 0))
    try:
        await h.advance(timedelta(seconds=1))
        assert len(digest_texts(h, LEADER)) == 1  # the 23rd's, on time
        # Down from 11-23 09:00 to 11-25 07:00: the 24th's digest is never sent.
        h = await restart(h, tmp_path, local(11, 25, 7, 0) - h.clock.now())
        assert len(digest_texts(h, LEADER)) == 1
        await h.advance(timedelta(hours=1))  # 08:00: not yet
        assert len(digest_texts(h, LEADER)) == 1
        await h.advance(timedelta(minutes=30))  # 08:30
        [_, text] = digest_texts(h, LEADER)
        assert text.startswith("<b>早上好！2026-11-25 今日待办</b>")
        assert "11-24" not in text and "11月24日" not in text
    finally:
        await h.app.close()


async def test_the_monthly_score_late_says_when_it_was_due(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(10, 31, 20, 0))
    try:
        await h.advance(timedelta(seconds=1))
        # Down over the 1st: started on 11-02 at 15:00; the score was due 11-01 08:30.
        h = await restart(h, tmp_path, local(11, 2, 15, 0) - h.clock.now())
        [score] = [t for t in h.texts(COMMUNITY_SUP) if "考核" in t]
        assert score.startswith("<b>2026-10 网格考核得分（补发）</b>")
        assert "原定 11月1日 08:30 发送，系统暂停后补发。" in score
        [street] = [t for t in h.texts(STREET_SUP) if "考核" in t]
        assert "（补发）" in street
    finally:
        await h.app.close()


async def test_on_time_score_has_no_late_mark(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 1, 8, 0))
    try:
        await load(h, policy('digest_at: "08:30"'))
        await h.advance(timedelta(minutes=30))
        [score] = [t for t in h.texts(COMMUNITY_SUP) if "考核" in t]
        assert score.startswith("<b>2026-10 网格考核得分</b>") and "补发" not in score
    finally:
        await h.app.close()


async def test_english_late_digest(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 15, 30), locale="en")
    try:
        await h.advance(timedelta(seconds=0))
        [text] = [t for t in h.texts(LEADER) if "work" in t.lower()]
        assert text.startswith("<b>Work for 2026-11-24 (sent late)</b>")
        assert "Good morning" not in text and "Due on 11/24 at 08:30" in text
    finally:
        await h.app.close()
