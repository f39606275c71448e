"""挂账 (suspension) through the real Dispatcher with a moved clock: asked with a reason and a
review date, approved or declined above, the case quiet while suspended (no reminders, ⏸), the
reporter told privately, back to its handler on the review date or earlier on 恢复办理, and who
may press 挂账, 恢复办理 and the approval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.cases.buttons import Action, CaseButton
from bot.context import begin
from bot.org.roles import load_actor
from bot.workflow import approvals, suspension
from storage.models import Case, CaseRequest, CaseTimerStep
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    STREET_SUP,
    Harness,
    Snapshot,
    make_harness,
)
from tests.test_access import INSIDE, OUTSIDE, ROLES, _build, parse_rules, snapshots  # noqa: F401

TZ = "Asia/Shanghai"
REASON = "道路改造需区里立项，资金明年到位"


async def confirmed(h: Harness) -> Case:
    case = await h.report_in_group("小区门口道路塌陷，需要重修")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def ask_suspend(h: Harness, case_id: int, *, by: int = LEADER, reason: str = REASON,
                      review: str = "90 天后") -> None:
    """挂账 on the handler's card: the reason, then a review button (or a typed date)."""
    await h.press(by, h.card(by, case_id), "挂账")
    assert "挂账的原因" in h.last(by).text
    await h.private(by, reason)
    prompt = h.last(by)
    assert "复核日期" in prompt.text
    assert prompt.labels == ["30 天后", "90 天后", "180 天后"]
    if review.endswith("天后"):
        await h.press(by, prompt, review)
    else:
        await h.private(by, review)


async def request_row(h: Harness, case_id: int) -> CaseRequest:
    async with h.app.sessions() as db:
        req = await db.scalar(select(CaseRequest).where(CaseRequest.case_id == case_id)
                              .order_by(CaseRequest.id.desc()).limit(1))
        assert req is not None
        return req


async def suspended(h: Harness, review: str = "90 天后") -> Case:
    case = await confirmed(h)
    await ask_suspend(h, case.id, review=review)
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    return await h.case(case.id)


def local(when: datetime | None) -> datetime:
    assert when is not None
    return when.astimezone(ZoneInfo(TZ))


# --- approved ------------------------------------------------------------------------------


async def test_approved_suspension_tells_the_reporter_privately(h: Harness) -> None:
    case = await confirmed(h)
    group_before = len(h.texts(BUILDING_CHAT))
    await ask_suspend(h, case.id)
    assert "已报上级审批" in h.last(LEADER).text
    req = await request_row(h, case.id)
    assert req.kind == "suspension" and req.status == "pending"
    assert req.approver_level == "community" and req.reason == REASON
    review = local(req.review_at)
    # 90 days on is Sunday 2027-02-21: moved to the next working day (issue 19, defect 13).
    assert (review.date() - local(h.clock.now()).date()).days == 91
    assert (review.hour, review.minute) == (9, 0)
    # The supervisors above get the request with the reason and the review date.
    card = h.last(COMMUNITY_SUP)
    assert "挂账申请" in card.text and REASON in card.text
    assert review.strftime("%Y-%m-%d") in card.text
    # Asking changes nothing yet: still with the handler, and no 挂账 button while pending.
    pending = await h.case(case.id)
    assert pending.status == "open" and pending.rev == case.rev
    assert pending.request_at is not None
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    after = await h.case(case.id)
    assert after.status == "suspended" and after.review_at == req.review_at
    assert after.request_at is None and after.assignee_id is None
    assert after.round == 1
    assert (await request_row(h, case.id)).status == "approved"
    assert await h.events(case.id) == ["report", "confirm", "suspension_request", "suspend"]
    # The handler is told; the reporter is told privately and politely, with the reason.
    assert "已获同意" in h.last(LEADER).text
    told = h.last(RESIDENT).text
    assert "挂账" in told and REASON in told and "谅解" in told
    assert review.strftime("%Y-%m-%d") in told
    # Nothing in the building group: the neighbours need not read it.
    assert len(h.texts(BUILDING_CHAT)) == group_before


async def test_unreachable_reporter_is_not_told_in_the_group(h: Harness) -> None:
    case = await confirmed(h)
    h.api.forbid(RESIDENT)
    group_before = len(h.texts(BUILDING_CHAT))
    await ask_suspend(h, case.id)
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    assert (await h.case(case.id)).status == "suspended"
    assert not any("挂账" in t for t in h.texts(BUILDING_CHAT)[group_before:])


async def test_no_reminders_while_suspended_and_paused_in_lists(h: Harness) -> None:
    case = await suspended(h)
    sent_before = {who: len(h.texts(who)) for who in (LEADER, MEMBER, COMMUNITY_SUP,
                                                     STREET_SUP)}
    # Far past the 72h deadline, the overdue repeats and both escalations: nothing.
    for _ in range(8):
        await h.advance(timedelta(days=10))
    after = await h.case(case.id)
    assert after.status == "suspended" and after.level == "grid"
    for who, count in sent_before.items():
        assert h.texts(who)[count:] == [], who
    assert await h.events(case.id) == ["report", "confirm", "suspension_request", "suspend"]
    async with h.app.sessions() as db:
        steps = (await db.scalars(select(CaseTimerStep.step)
                                  .where(CaseTimerStep.case_id == case.id))).all()
    assert not {"due_soon", "overdue", "escalate"} & set(steps)
    await h.private(LEADER, "/cases")
    listing = h.last(LEADER).text
    assert f"⏸ #{case.id}" in listing and "已挂账" in listing
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER)
    assert "挂账复核" in detail.text and "同意挂账" in detail.text
    assert detail.labels == ["恢复办理"]


async def test_review_date_returns_the_case_with_a_new_clock(h: Harness) -> None:
    case = await suspended(h, review="30 天后")
    review_at = case.review_at
    assert review_at is not None
    await h.advance(review_at - h.clock.now() - timedelta(minutes=1))
    assert (await h.case(case.id)).status == "suspended"
    await h.advance(timedelta(minutes=2))
    after = await h.case(case.id)
    assert after.status == "accepted" and after.review_at is None
    assert after.round == 1 and after.accepted_by_id == LEADER
    # The sweep that took the review started the clock: a full SLA from then.
    assert after.clock_started_at == h.clock.now()
    sla = case.deadline_at - case.clock_started_at
    assert after.deadline_at == after.clock_started_at + sla
    assert (await h.events(case.id))[-1] == "suspend_review"
    # The handler gets the card, kind resumed, with the reason and the handling buttons.
    card = h.card(LEADER, case.id)
    assert "恢复办理" in card.text and f"挂账原因：{REASON}" in card.text
    assert "办结" in card.labels and "挂账" in await h.all_labels(LEADER, card)
    # The reporter hears privately that it is handled again.
    assert "已恢复办理" in h.last(RESIDENT).text
    # Reminders again, on the new clock: due soon at 0.75 of the SLA from the review.
    await h.advance(after.clock_started_at + sla * 0.75 - h.clock.now() + timedelta(
        minutes=1))
    assert any("临期提醒" in t for t in h.texts(LEADER))
    # The review is taken once.
    await h.advance(timedelta(hours=1))
    assert (await h.events(case.id)).count("suspend_review") == 1


async def test_resume_early_from_the_card(h: Harness) -> None:
    case = await suspended(h)
    h.clock.advance(timedelta(days=3))
    await h.press_data(LEADER, CaseButton(Action.RESUME, case.id, case.rev).pack())
    assert "已恢复办理" in h.answers()[-1]
    await h.deliver()
    after = await h.case(case.id)
    assert after.status == "accepted" and after.review_at is None
    assert after.clock_started_at == h.clock.now()
    assert (await h.events(case.id))[-1] == "resume"
    assert f"挂账原因：{REASON}" in h.card(LEADER, case.id).text
    assert "已恢复办理" in h.last(RESIDENT).text
    # The review date then does nothing: the step belongs to the suspended status.
    await h.advance(timedelta(days=100))
    assert "suspend_review" not in await h.events(case.id)
    # A second press of the same 恢复办理 is stale.
    await h.press_data(LEADER, CaseButton(Action.RESUME, case.id, case.rev).pack())
    assert "已失效" in h.answers()[-1]


async def test_resume_early_from_case_command_by_the_supervisor_above(h: Harness) -> None:
    case = await suspended(h)
    await h.private(COMMUNITY_SUP, f"/case {case.id}")
    detail = h.last(COMMUNITY_SUP)
    assert detail.labels == ["恢复办理"]
    await h.press(COMMUNITY_SUP, detail, "恢复办理")
    assert "已恢复办理" in h.answers()[-1]
    after = await h.case(case.id)
    assert after.status == "accepted"
    # The card the button was on now shows the supervisor's buttons for the case.
    assert "恢复办理" not in h.last(COMMUNITY_SUP).labels
    # The grid leader, who handles it, gets the card back.
    assert f"挂账原因：{REASON}" in h.card(LEADER, case.id).text


async def test_stale_resume_after_the_review(h: Harness) -> None:
    case = await suspended(h, review="30 天后")
    assert case.review_at is not None
    await h.advance(case.review_at - h.clock.now() + timedelta(minutes=1))
    assert (await h.case(case.id)).status == "accepted"
    await h.press_data(LEADER, CaseButton(Action.RESUME, case.id, case.rev).pack())
    assert "已失效" in h.answers()[-1]
    # A forged one with the current rev: the case is not suspended, so nothing to resume.
    now = await h.case(case.id)
    await h.press_data(LEADER, CaseButton(Action.RESUME, case.id, now.rev).pack())
    assert "已失效" in h.answers()[-1]
    assert (await h.case(case.id)).rev == now.rev


async def test_at_community_level_the_street_approves_and_the_review_returns_it_there(
        h: Harness) -> None:
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要社区协调")
    assert (await h.case(case.id)).level == "community"
    # The grid leader no longer holds it: 挂账 is the community's to ask, the street's to answer.
    now = await h.case(case.id)
    await h.press_data(LEADER, CaseButton(Action.SUSPEND, case.id, now.rev).pack())
    assert "无权" in h.answers()[-1]
    await ask_suspend(h, case.id, by=COMMUNITY_SUP, review="30 天后")
    req = await request_row(h, case.id)
    assert req.approver_level == "street"
    await h.press(STREET_SUP, h.last(STREET_SUP), "✅ 同意")
    after = await h.case(case.id)
    assert after.status == "suspended" and after.level == "community"
    assert after.review_at is not None
    await h.advance(after.review_at - h.clock.now() + timedelta(minutes=1))
    back = await h.case(case.id)
    assert back.status == "accepted" and back.level == "community"
    assert f"挂账原因：{REASON}" in h.card(COMMUNITY_SUP, case.id).text


# --- declined, unanswered, refused ---------------------------------------------------------


async def test_declined_suspension(h: Harness) -> None:
    case = await confirmed(h)
    await ask_suspend(h, case.id)
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "❌ 不同意")
    await h.private(COMMUNITY_SUP, "属于网格职责，请协调物业先行修补")
    after = await h.case(case.id)
    assert after.status == "open" and after.review_at is None and after.request_at is None
    assert (await request_row(h, case.id)).status == "declined"
    assert (await h.events(case.id))[-1] == "suspension_decline"
    told = h.last(LEADER).text
    assert "未获同意" in told and "协调物业先行修补" in told
    assert not any("挂账" in t for t in h.texts(RESIDENT))
    # The handler may ask again.
    await ask_suspend(h, case.id, review="30 天后")
    assert (await request_row(h, case.id)).status == "pending"


async def test_unanswered_suspension_expires(h: Harness) -> None:
    case = await confirmed(h)
    await ask_suspend(h, case.id)
    await h.advance(timedelta(days=1, minutes=1))
    assert (await request_row(h, case.id)).status == "expired"
    assert (await h.case(case.id)).status == "open"
    assert "suspension_expire" in await h.events(case.id)


async def test_typed_review_dates_and_bad_ones(h: Harness) -> None:
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "挂账")
    await h.private(LEADER, REASON)
    for bad in ("明年", "0d", "400d", "2026-11-23", "2030-01-01", "13-40"):
        await h.private(LEADER, bad)
        assert "无法识别或不在 1 至 366 天内" in h.last(LEADER).text, bad
    assert (await h.case(case.id)).request_at is None
    await h.private(LEADER, "45d")
    req = await request_row(h, case.id)
    assert (local(req.review_at).date() - local(h.clock.now()).date()).days == 45


async def test_review_buttons_outside_the_prompt_are_expired(h: Harness) -> None:
    await confirmed(h)
    await h.press_data(LEADER, "sv:30d")
    assert "已过期" in h.answers()[-1]


async def test_request_pending_refuses_a_second(h: Harness) -> None:
    case = await confirmed(h)
    await ask_suspend(h, case.id)
    # The card sent before the request still carries 挂账 and its rev still holds.
    await h.press_data(LEADER, CaseButton(Action.SUSPEND, case.id, case.rev).pack())
    assert "已有一项申请" in h.answers()[-1]


# --- parsing ---------------------------------------------------------------------------------


NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.mark.parametrize(("text", "day"), [
    ("2027-03-01", "2027-03-01"),
    ("2027/3/1", "2027-03-01"),
    ("2027年3月1日", "2027-03-01"),
    ("２０２７－０３－０１", "2027-03-01"),
    ("03-01", "2027-03-01"),
    ("12-01", "2026-12-01"),
    ("11-24", "2026-11-24"),
    ("11-23", "2027-11-23"),  # today's date: its next occurrence, a year on (365 days)
    ("45d", "2027-01-07"),
    ("45天", "2027-01-07"),
    ("1d", "2026-11-24"),
    ("366d", "2027-11-24"),
])
def test_parse_review(text: str, day: str) -> None:
    got = local(suspension.parse_review(text, NOW, TZ))
    assert got.strftime("%Y-%m-%d %H:%M") == f"{day} 09:00"


@pytest.mark.parametrize("text", ["", "0d", "367d", "2026-11-23", "2026-11-22", "2027-11-25",
                                  "02-30", "13-01", "tomorrow", "3", "2027-02-29"])
def test_parse_review_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        suspension.parse_review(text, NOW, TZ)


def test_parse_review_counts_days_in_the_registry_zone() -> None:
    # 16:30 UTC is 00:30 the next day in Shanghai: "1d" is the day after that.
    late = datetime(2026, 11, 23, 16, 30, tzinfo=UTC)
    assert local(suspension.parse_review("1d", late, TZ)).strftime("%m-%d") == "11-25"


# --- who may press -------------------------------------------------------------------------

# in: the case in BSY-01-03 (grid BSY-01); out: BSY-02-12 (grid BSY-02, leader 920011). Both at
# grid level. `su` on an open case; `sr` on a suspended one; `q1` the approval of a pending
# suspension request, which goes to the community (BSY, over both grids) and may be answered
# from the street too.
RULES = """
button  resident unit_head building_head grid_member grid_leader community street stranger
su      N/N      N/N       N/N           N/N         Y/N         N/N       N/N    N/N
sr      N/N      N/N       N/N           N/N         Y/N         Y/Y       Y/Y    N/N
q1      N/N      N/N       N/N           N/N         N/N         Y/Y       Y/Y    N/N
"""
CELLS = parse_rules(RULES)
SCENARIO = {"su": "open", "sr": "suspended", "q1": "requested"}

_SNAPS: dict[str, Snapshot] = {}


async def _prepare(h: Harness, scenario: str) -> None:
    """Both cases open at grid level (test_access's "open"), then asked or suspended."""
    await _build(h, "open")
    if scenario == "open":
        return
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        review = suspension.review_in(30, tx.now, tx.policy.timezone)
        for case_id, who in ((INSIDE, LEADER), (OUTSIDE, LEADER2)):
            actor = await load_actor(db, who)
            case = await db.get(Case, case_id)
            assert case is not None
            req = await suspension.request(tx, actor, case_id, case.rev, REASON, review)
            if scenario == "suspended":
                sup = await load_actor(db, COMMUNITY_SUP)
                await approvals.answer(tx, sup, req.id, True)
    await h.deliver()


@pytest.fixture
async def run_b(tmp_path: Path, snapshots: Path  # noqa: F811
                ) -> AsyncIterator[Callable[[str], Awaitable[Harness]]]:
    opened: list[Harness] = []

    async def open_(scenario: str) -> Harness:
        if scenario not in _SNAPS:
            where = snapshots / f"suspension-{scenario}"
            where.mkdir()
            built = await make_harness(where)
            await _prepare(built, scenario)
            await built.app.close()
            _SNAPS[scenario] = await Snapshot.take(f"suspension-{scenario}", where)
        await _SNAPS[scenario].restore(tmp_path)
        h = await make_harness(tmp_path, load=False)
        opened.append(h)
        return h

    yield open_
    for h in opened:
        await h.app.close()


@pytest.mark.parametrize(("button", "role", "scope"), sorted(CELLS))
async def test_who_may_press(button: str, role: str, scope: str,
                             run_b: Callable[[str], Awaitable[Harness]]) -> None:
    expected = CELLS[(button, role, scope)]
    user = ROLES[role]
    h = await run_b(SCENARIO[button])
    case_id = INSIDE if scope == "in" else OUTSIDE
    case = await h.case(case_id)
    if button == "q1":
        req = await request_row(h, case_id)
        data = f"q1:{req.id}:y"
    else:
        data = CaseButton(Action.SUSPEND if button == "su" else Action.RESUME,
                          case.id, case.rev).pack()
    await h.press_data(user, data)
    answer = h.answers()[-1]
    after = await h.case(case_id)
    if expected == "N":
        assert "无权" in answer, answer
        assert h.texts(user) == [], "no prompt follows a refusal"
        assert (after.status, after.rev, after.request_at) == (
            case.status, case.rev, case.request_at)
        return
    assert "无权" not in answer and "失效" not in answer, answer
    if button == "su":
        await h.private(user, REASON)
        await h.press(user, h.last(user), "30 天后")
        assert (await h.case(case_id)).request_at is not None
        assert (await request_row(h, case_id)).status == "pending"
    elif button == "sr":
        assert after.status == "accepted"
    else:
        assert after.status == "suspended"
        assert (await request_row(h, case_id)).answered_by_id == user
