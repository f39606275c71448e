"""The rules of a request to the level above (延期, 挂账), checked when it is made and again
when it is approved (issue 19, defects 10, 13, 14, 16), through the real Dispatcher.

- An approval that no longer applies (the review date has come, the deadline has passed, the
  limit was lowered, the requester no longer holds the case) is refused with its reason: the
  supervisor is told in the chat, the request is answered as refused and its requester told.
- A 挂账 review date on a day off moves to the next working day of the district's calendar.
- 延期 of a working-time case (`wh`, `wd`) counts working time: "1 天" is one working day.
- An approved extension sends the handler a fresh card with the new deadline.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.cases.deadlines import deadline_of, original_deadline
from bot.org.policy import Policy
from bot.org.workcal import WorkCalendar
from bot.telegram.fake import Sent
from storage.models import Case, CaseRequest
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    RESIDENT,
    SAMPLE,
    Harness,
    make_harness,
)
from tests.test_access import reload, swapped_leaders

TZ = ZoneInfo("Asia/Shanghai")
REASON = "道路改造需区里立项，资金明年到位"


def at(y: int, mo: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, mo, d, hh, mm, tzinfo=TZ).astimezone(UTC)


def local(when: datetime | None) -> datetime:
    assert when is not None
    return when.astimezone(TZ)


async def confirmed(h: Harness, text: str = "楼道灯坏了") -> Case:
    case = await h.report_in_group(text)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def ask_extension(h: Harness, case_id: int, length: str = "1 天",
                        reason: str = "需更换整条线路，等物业采购配件") -> None:
    await h.press(LEADER, h.card(LEADER, case_id), "申请延期")
    await h.press(LEADER, h.last(LEADER), length)
    await h.private(LEADER, reason)


async def ask_suspend(h: Harness, case_id: int, review: str) -> None:
    """挂账 with a typed review date (`1d`, `2026-10-03`) or a button (`30 天后`)."""
    await h.press(LEADER, h.card(LEADER, case_id), "挂账")
    await h.private(LEADER, REASON)
    if review.endswith("天后"):
        await h.press(LEADER, h.last(LEADER), review)
    else:
        await h.private(LEADER, review)


def request_card(h: Harness, who: int = COMMUNITY_SUP) -> Sent:
    """The latest request card (同意 / 不同意) sent to `who`."""
    for sent in reversed(h.api.to(who)):
        if any(str(b.get("callback_data", "")).startswith("q1:") for r in sent.buttons
               for b in r):
            return sent
    raise AssertionError(f"no request card for {who}")


async def request_row(h: Harness, case_id: int) -> CaseRequest:
    async with h.app.sessions() as db:
        req = await db.scalar(select(CaseRequest).where(CaseRequest.case_id == case_id)
                              .order_by(CaseRequest.id.desc()).limit(1))
        assert req is not None
        return req


# --- defect 10: checked again when approved ------------------------------------------------


async def test_suspension_approved_after_its_review_date_is_refused(h: Harness) -> None:
    """Asked on Monday 10:00 for a review on Tuesday (09:00), approved on Tuesday 09:30 within
    the one-day answer window: refused, not suspended and resumed in one sweep."""
    case = await confirmed(h)
    await ask_suspend(h, case.id, "1d")
    req = await request_row(h, case.id)
    assert local(req.review_at).strftime("%m-%d %H:%M") == "11-24 09:00"
    card = h.last(COMMUNITY_SUP)
    await h.advance(timedelta(hours=23, minutes=30))  # Tuesday 09:30
    assert (await request_row(h, case.id)).status == "pending"
    resident_before = len(h.texts(RESIDENT))
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    # The supervisor is told why, in the chat: an alert and a message; the card is answered.
    alert = h.answers()[-1]
    assert "不能同意" in alert and "复核日期" in alert and "11-24" in alert, alert
    said = h.last(COMMUNITY_SUP).text
    assert "不能同意" in said and "复核日期" in said, said
    assert card.buttons == []
    # The request is answered as refused, with its reason; nothing was suspended.
    row = await request_row(h, case.id)
    assert row.status == "refused" and row.answer_note and "复核日期" in row.answer_note
    after = await h.case(case.id)
    assert after.status == "open" and after.review_at is None and after.request_at is None
    assert after.clock_started_at == case.clock_started_at
    assert after.deadline_at == case.deadline_at
    assert await h.events(case.id) == ["report", "confirm", "suspension_request",
                                       "suspension_decline"]
    # The resident hears nothing (no 挂账, no 恢复办理); the requester is told why.
    assert h.texts(RESIDENT)[resident_before:] == []
    told = h.last(LEADER).text
    assert "挂账申请" in told and "复核日期" in told and "重新申请" in told, told
    # The sweep that follows has nothing to resume, and the button is stale now.
    await h.advance(timedelta(hours=1))
    assert "suspend_review" not in await h.events(case.id)
    await h.press_data(COMMUNITY_SUP, f"q1:{row.id}:y")
    assert "已失效" in h.answers()[-1]


async def test_suspension_approved_at_its_review_date_is_refused(h: Harness) -> None:
    case = await confirmed(h)
    await ask_suspend(h, case.id, "1d")
    await h.advance(timedelta(hours=23))  # Tuesday 09:00, the review date itself
    await h.press(COMMUNITY_SUP, request_card(h), "✅ 同意")
    assert "复核日期" in h.answers()[-1]
    assert (await h.case(case.id)).status == "open"
    assert (await request_row(h, case.id)).status == "refused"


async def test_suspension_approved_in_time_still_suspends(h: Harness) -> None:
    case = await confirmed(h)
    await ask_suspend(h, case.id, "2d")
    await h.advance(timedelta(hours=23))  # Tuesday 09:00; the review is on Wednesday
    await h.press(COMMUNITY_SUP, request_card(h), "✅ 同意")
    assert (await h.case(case.id)).status == "suspended"


async def test_extension_approved_after_the_deadline_is_refused(h: Harness) -> None:
    """Asked on Wednesday 12:00 before Thursday 10:00's deadline, approved Thursday 10:30."""
    case = await confirmed(h)
    await h.advance(timedelta(hours=50))  # Wednesday 12:00
    await ask_extension(h, case.id)
    card = h.last(COMMUNITY_SUP)
    assert "延期申请" in card.text
    await h.advance(timedelta(hours=22, minutes=30))  # Thursday 10:30, overdue
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    alert = h.answers()[-1]
    assert "不能同意" in alert and "已过办结时限" in alert, alert
    after = await h.case(case.id)
    assert after.deadline_at == case.deadline_at
    assert (after.extended_seconds, after.extension_count, after.request_at) == (0, 0, None)
    assert (await request_row(h, case.id)).status == "refused"
    assert (await h.events(case.id))[-1] == "extension_decline"
    assert "已过办结时限" in h.last(LEADER).text


async def test_extension_approved_after_the_limit_was_lowered_is_refused(h: Harness) -> None:
    case = await confirmed(h)
    await ask_extension(h, case.id)
    text = SAMPLE.read_text("utf-8")
    await reload(h, text.replace("max_extensions: 1 ", "max_extensions: 0 "))
    await h.press(COMMUNITY_SUP, request_card(h), "✅ 同意")
    assert "不能同意" in h.answers()[-1] and "延期" in h.answers()[-1]
    after = await h.case(case.id)
    assert after.deadline_at == case.deadline_at and after.extension_count == 0
    assert (await request_row(h, case.id)).status == "refused"


async def test_approval_after_the_requester_left_the_grid_is_refused(h: Harness) -> None:
    case = await confirmed(h)
    await ask_extension(h, case.id)
    await reload(h, swapped_leaders())  # 920001 now leads BSY-02
    await h.press(COMMUNITY_SUP, request_card(h), "✅ 同意")
    assert "申请人" in h.answers()[-1], h.answers()[-1]
    assert (await h.case(case.id)).extension_count == 0
    assert (await request_row(h, case.id)).status == "refused"


# --- defect 13: a review date on a day off ---------------------------------------------------


@pytest.fixture
async def september(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The bot on Tuesday 2026-09-01 10:00: 30 days on is 10-01, National Day."""
    h = await make_harness(tmp_path, start=at(2026, 9, 1, 10))
    yield h
    await h.app.close()


async def test_review_date_on_national_day_moves_to_the_next_working_day(
        september: Harness) -> None:
    h = september
    case = await confirmed(h)
    await ask_suspend(h, case.id, "30 天后")
    req = await request_row(h, case.id)
    assert local(req.review_at).strftime("%Y-%m-%d %H:%M") == "2026-10-08 09:00"
    assert "2026-10-08" in h.last(LEADER).text  # the handler is told the date it got
    card = h.last(COMMUNITY_SUP)
    assert "挂账至 2026-10-08，届时复核" in card.text and "顺延" in card.text, card.text
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    after = await h.case(case.id)
    assert after.status == "suspended" and after.review_at == req.review_at
    told = h.last(RESIDENT).text
    assert "2026-10-08" in told and "2026-10-01" not in told, told


@pytest.mark.parametrize(("typed", "day"), [
    ("2026-10-03", "2026-10-08"),  # National Day
    ("2026-09-05", "2026-09-07"),  # a Saturday
    ("2026-09-25", "2026-09-28"),  # Mid-Autumn Festival, then the weekend
    ("2026-09-07", "2026-09-07"),  # a working day stays
])
async def test_typed_review_dates_move_off_days_off(september: Harness, typed: str,
                                                    day: str) -> None:
    h = september
    case = await confirmed(h)
    await ask_suspend(h, case.id, typed)
    req = await request_row(h, case.id)
    assert local(req.review_at).strftime("%Y-%m-%d") == day


# --- defect 14: 延期 of a working-time case counts working time ------------------------------


OTHER_TEXT = "快递柜不够用"  # filed as `other`


def in_working_days(text: str) -> str:
    line = next(x for x in text.splitlines() if "{code: other," in x)
    return text.replace(line, line.replace("sla: 72h", "sla: 2wd"))


async def test_one_day_of_a_working_day_case_is_one_working_day(tmp_path: Path) -> None:
    """A 2wd case reported Monday 09-28 is due Wednesday 09-30 17:30; "1 天" asked on 09-30
    is the next working day after National Day: 10-08 17:30, not 10-01 (a holiday)."""
    h = await make_harness(tmp_path, start=at(2026, 9, 28, 10))
    try:
        await reload(h, in_working_days(SAMPLE.read_text("utf-8")))
        case = await confirmed(h, OTHER_TEXT)
        assert case.category == "other"
        assert local(case.deadline_at).strftime("%m-%d %H:%M") == "09-30 17:30"
        h.clock.set(at(2026, 9, 30, 10))
        await ask_extension(h, case.id, "1 天")
        card = h.last(COMMUNITY_SUP)
        assert "1 个工作日" in card.text, card.text
        assert "延期后时限 10-08 17:30（现时限 09-30 17:30）" in card.text, card.text
        assert "工作日" in card.text and "节假日" in card.text
        await h.press(COMMUNITY_SUP, card, "✅ 同意")
        after = await h.case(case.id)
        assert local(after.deadline_at).strftime("%m-%d %H:%M") == "10-08 17:30"
        assert "10-08 17:30" in h.last(LEADER).text
        await h.private(LEADER, f"/case {case.id}")
        detail = h.last(LEADER).text
        assert "10-08 17:30（已延期，原时限 09-30 17:30）" in detail, detail
    finally:
        await h.app.close()


def policy(working: bool) -> Policy:
    return Policy(timezone="Asia/Shanghai", verify_within=None, remind_at=0.75,
                  overdue_repeat=timedelta(hours=4), escalate_after=timedelta(hours=24),
                  rating_within=None, quiet_start=None, quiet_end=None,
                  working=frozenset({"other"}) if working else frozenset())


def test_extensions_in_each_unit() -> None:
    p = policy(True)
    start = at(2026, 9, 30, 10)
    day, hours12 = 86400, 12 * 3600
    # Clock time: the length as it is.
    assert deadline_of(p, start, timedelta(hours=72), "", day) == start + timedelta(hours=96)
    # 2wd: due 09-30 17:30; a day more is the next working day, 10-08 (10-01..10-07 off).
    assert deadline_of(p, at(2026, 9, 28, 10), timedelta(days=2), "wd", day) == at(
        2026, 10, 8, 17, 30)
    # 8wh from 09-30 10:00 is 10-08 11:00; a day more is 10-09 11:00, 12 hours of working
    # time more is 10-10 09:00 (10-10 is a 调休 working Saturday).
    assert deadline_of(p, start, timedelta(hours=8), "wh") == at(2026, 10, 8, 11)
    assert deadline_of(p, start, timedelta(hours=8), "wh", day) == at(2026, 10, 9, 11)
    assert deadline_of(p, start, timedelta(hours=8), "wh", hours12) == at(2026, 10, 10, 9)


@pytest.mark.parametrize(("deadline", "seconds"), [
    (at(2026, 10, 8, 17, 30), 86400),  # end of a working day: back to 09-30 17:30
    (at(2026, 10, 9, 11), 86400),
    (at(2026, 10, 10, 9), 12 * 3600),
    (at(2026, 11, 26, 12), 3600),  # the end of a morning period
])
def test_original_deadline_undoes_a_working_extension(deadline: datetime,
                                                       seconds: int) -> None:
    cal = WorkCalendar()
    before = original_deadline(policy(True), Case(category="other", deadline_at=deadline,
                                                   extended_seconds=seconds))
    assert cal.extend(before, seconds) == deadline
    # The original deadline is a working moment, never the start of a period.
    assert before.astimezone(TZ).time() not in (p[0] for p in cal.periods)
    clock = original_deadline(policy(False), Case(category="other", deadline_at=deadline,
                                                  extended_seconds=seconds))
    assert clock == deadline - timedelta(seconds=seconds)


# --- defect 16: a fresh card after an approved extension -------------------------------------


async def test_approved_extension_sends_the_handler_a_fresh_card(h: Harness) -> None:
    case = await confirmed(h)
    await ask_extension(h, case.id, "1 天")
    before = len(h.api.to(LEADER))
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    new = h.api.to(LEADER)[before:]
    cards = [s for s in new if s.buttons]
    assert len(cards) == 1, [s.text for s in new]
    card = cards[0]
    assert card is h.card(LEADER, case.id)
    assert "延期" in card.text.splitlines()[0], card.text
    assert "办结时限：11-27 10:00（已延期，原时限 11-26 10:00）" in card.text, card.text
    assert "办结" in card.labels and "申请延期" not in await h.all_labels(LEADER, card)
    # The answer is still said in words, last.
    assert "已获同意" in h.last(LEADER).text
    # The card's buttons work: the case is handled from it.
    await h.press(LEADER, card, "受理")
    assert (await h.case(case.id)).status == "accepted"
