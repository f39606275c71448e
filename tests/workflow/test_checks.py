"""核查 (on-site check) and 返工, through the real Dispatcher with a moved clock.

`housing` has `check: true` in the sample registry; `policy.check: true` turns the check on for
every category. The building head of BSY-01-03 checks; BSY-02-12 has no head, so its cases are
not checked (`skipped`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cases import lifecycle as cases
from bot.cases.buttons import Action, CaseButton
from bot.cases.intake import ensure_person
from bot.cases.registry_edit import apply_registry
from bot.context import begin
from bot.org.registry import parse_registry
from bot.org.roles import load_actor, node_by_code
from storage.models import Case, CaseEvent, CasePhoto, PendingPhoto
from tests.harness import (
    BUILDING12_CHAT,
    BUILDING_CHAT,
    HEAD,
    LEADER,
    LEADER2,
    RESIDENT,
    RESIDENT2,
    SAMPLE,
    UNIT_CHAT,
    Harness,
    Snapshot,
    make_harness,
)
from tests.test_access import ROLES, parse_rules, snapshots  # noqa: F401  (a fixture)

RESULT = "已更换破裂的水管，恢复供水"


async def housing_case(h: Harness, chat: int = BUILDING_CHAT, user: int = RESIDENT) -> Case:
    """A report in the group, set to 房屋水电 (check: true) and confirmed by the head."""
    # Words no category suggests: the head sets 房屋水电 by hand.
    case = await h.report_in_group("3单元一楼地面全是水", user=user, chat=chat)
    await h.press_data(HEAD, f"c1:cs:{case.id}:{case.rev}:housing")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    case = await h.case(case.id)
    assert (case.category, case.status) == ("housing", "open")
    return case


async def resolve(h: Harness, case_id: int, *, by: int = LEADER,
                  photos: tuple[str, ...] = ("after-1",), result: str = RESULT) -> None:
    await h.press(by, h.card(by, case_id), "办结")
    for photo in photos:
        await h.private(by, photo=photo)
    await h.private(by, result)
    await h.press(by, h.last(by), "提交办结")


async def fail_check(h: Harness, case_id: int, reason: str,
                     photos: tuple[str, ...] = ()) -> None:
    await h.press(HEAD, h.card(HEAD, case_id), "❌ 不通过")
    assert "不通过的原因" in h.last(HEAD).text
    for photo in photos:
        await h.private(HEAD, photo=photo)
    await h.private(HEAD, reason)
    preview = h.last(HEAD)
    assert reason in preview.text
    await h.press(HEAD, preview, "提交核查意见")


def mentions(h: Harness, chat: int, case_id: int) -> list[str]:
    return [t for t in h.texts(chat) if f"#{case_id}" in t]


async def test_head_checks_and_passes_then_the_reporter_rates(h: Harness) -> None:
    case = await housing_case(h)
    heard = len(h.texts(RESIDENT)), len(h.texts(BUILDING_CHAT))
    await resolve(h, case.id)
    checking = await h.case(case.id)
    assert (checking.status, checking.checked) == ("checking", "pending")
    assert (await h.events(case.id))[-1] == "resolve_check"
    # The handler is told the check comes first, not that the reporter was told.
    assert any("待楼栋长现场核查后再请反映人评价" in t for t in h.texts(LEADER)[-3:])
    card = h.card(HEAD, case.id)
    assert "待核查诉求" in card.text and RESULT in card.text and "现场核查" in card.text
    assert card.labels == ["✅ 通过", "❌ 不通过"]
    assert "after-1" in [p for s in h.api.to(HEAD) for p in s.photos]
    # The reporter and the building's group hear nothing before the check.
    assert (len(h.texts(RESIDENT)), len(h.texts(BUILDING_CHAT))) == heard
    # The handler sees the case waiting for the check, with nothing to press.
    await h.private(LEADER, f"/case {case.id}")
    assert "待楼栋长现场核查" in h.last(LEADER).text
    assert h.last(LEADER).labels == []
    # The head may check from /case as well as from the card.
    await h.private(HEAD, f"/case {case.id}")
    assert h.last(HEAD).labels == ["✅ 通过", "❌ 不通过"]

    h.clock.advance(timedelta(hours=3))
    await h.press(HEAD, card, "✅ 通过")
    assert h.answers()[-1] == f"诉求 #{case.id} 核查通过，已请反映人评价。"
    passed = await h.case(case.id)
    assert (passed.status, passed.checked) == ("resolved", "passed")
    assert passed.checked_at == h.clock.now()
    assert card.buttons == []
    asked = h.last(RESIDENT) if h.texts(RESIDENT) else h.last(BUILDING_CHAT)
    assert RESULT in asked.text and asked.labels == ["满意", "基本满意", "不满意"]
    assert await h.events(case.id) == ["report", "category", "confirm", "resolve_check",
                                       "check_pass"]
    await h.press(RESIDENT, asked, "满意")
    assert (await h.case(case.id)).status == "closed"


async def test_policy_check_covers_every_category(h: Harness) -> None:
    text = SAMPLE.read_text("utf-8").replace("  check: false ", "  check: true  ")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)
    case = await h.report_in_group("路灯不亮")
    assert case.category != "housing"
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await resolve(h, case.id, photos=())
    assert (await h.case(case.id)).status == "checking"
    # No after-photos: the head's card shows the report's (none here) and the buttons.
    assert h.card(HEAD, case.id).labels == ["✅ 通过", "❌ 不通过"]


async def test_failed_check_is_rework_with_a_new_clock_then_unsatisfied_is_the_second(
        h: Harness) -> None:
    case = await housing_case(h)
    await resolve(h, case.id)
    h.clock.advance(timedelta(hours=5))
    reworked_at = h.clock.now()
    await fail_check(h, case.id, "水管接口仍在滴水", photos=("check-1", "check-2"))
    assert "退回网格返工" in h.last(HEAD).text
    after = await h.case(case.id)
    assert (after.status, after.level, after.round) == ("open", "grid", 2)
    assert after.clock_started_at == reworked_at
    assert after.deadline_at == reworked_at + timedelta(hours=72)
    assert after.result is None and after.checked is None
    events = await h.events(case.id)
    assert events[-1] == "rework" and "reopen" not in events
    async with h.app.sessions() as db:
        ev = (await db.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)
                               .order_by(CaseEvent.id.desc()))).first()
        assert ev is not None
        assert (ev.from_status, ev.actor_id, ev.note) == ("checking", HEAD, "水管接口仍在滴水")
        kept = (await db.scalars(select(CasePhoto.file_id).where(
            CasePhoto.case_id == case.id, CasePhoto.kind == "check"))).all()
    assert list(kept) == ["check-1", "check-2"]
    # The handler gets the card: 返工, the head's reason, the count; then the head's photos.
    card = h.card(LEADER, case.id)
    assert "返工，重新办理" in card.text and "核查不通过" in card.text
    assert "核查意见：水管接口仍在滴水" in card.text and "返工：1 次" in card.text
    sent_photos = [p for s in h.api.to(LEADER) for p in s.photos]
    assert {"check-1", "check-2"} <= set(sent_photos)
    assert any("核查现场照片" in t for t in mentions(h, LEADER, case.id))
    # The reporter heard nothing of the failed check.
    assert not any("返工" in t for t in h.texts(RESIDENT))

    # The clock restarted: due soon at 0.75 of the SLA counted from the rework.
    await h.advance(timedelta(hours=53))
    assert not any("临期提醒" in t for t in mentions(h, LEADER, case.id))
    await h.advance(timedelta(hours=1, minutes=1))
    assert any("临期提醒" in t for t in mentions(h, LEADER, case.id))

    # Round 2: resolved, checked, passed; the reporter is not satisfied: the second 返工.
    await resolve(h, case.id, result="已更换接口并试压")
    assert (await h.case(case.id)).checked == "pending"
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 通过")
    await h.press(RESIDENT, h.card(RESIDENT, case.id), "不满意")
    await h.private(RESIDENT, "还是有水渗出来")
    again = await h.case(case.id)
    assert (again.status, again.round, again.rating) == ("open", 3, "bad")
    assert "返工：2 次" in h.card(LEADER, case.id).text
    assert (await h.events(case.id)).count("rework") == 2
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER).text
    assert "返工（核查不通过）" in detail and "返工（回访不满意）" in detail
    assert "返工：2 次" in detail


async def test_no_check_in_time_goes_on_to_the_rating_unchecked(h: Harness) -> None:
    case = await housing_case(h)
    await resolve(h, case.id)
    card = h.card(HEAD, case.id)
    resolved_at = (await h.case(case.id)).resolved_at
    assert resolved_at is not None
    await h.advance(timedelta(hours=23, minutes=59))
    assert (await h.case(case.id)).status == "checking"
    assert not any(RESULT in t for t in h.texts(RESIDENT) + h.texts(BUILDING_CHAT))
    await h.advance(timedelta(minutes=2))
    late = await h.case(case.id)
    assert (late.status, late.checked) == ("resolved", "unchecked")
    assert late.checked_at == h.clock.now()
    assert (await h.events(case.id))[-1] == "check_timeout"
    told = mentions(h, LEADER, case.id)[-1]
    assert "未在时限内现场核查" in told
    assert any(RESULT in t for t in h.texts(RESIDENT) + h.texts(BUILDING_CHAT))
    # A 通过 after the timeout is stale; the case is untouched.
    await h.press(HEAD, card, "✅ 通过")
    assert "失效" in h.answers()[-1]
    assert (await h.case(case.id)).checked == "unchecked"
    # The rating window counts from the timeout, not from the result.
    await h.advance(timedelta(days=3) - timedelta(minutes=2))
    assert (await h.case(case.id)).status == "resolved"
    await h.advance(timedelta(minutes=3))
    closed = await h.case(case.id)
    assert (closed.status, closed.close_reason) == ("closed", "no_feedback")
    # The sweep took the timeout once.
    assert (await h.events(case.id)).count("check_timeout") == 1
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER).text
    assert "超时未核查，转回访评价" in detail and "核查：超时未核查" in detail


async def test_a_building_without_a_head_is_not_checked(h: Harness) -> None:
    text = SAMPLE.read_text("utf-8").replace("  check: false ", "  check: true  ")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)
    case = await h.report_in_group("12号楼门口积水", user=RESIDENT2, chat=BUILDING12_CHAT)
    assert case.status == "open"
    await resolve(h, case.id, by=LEADER2, photos=())
    done = await h.case(case.id)
    assert (done.status, done.checked) == ("resolved", "skipped")
    assert any("已通知反映人和楼栋群" in t for t in h.texts(LEADER2)[-3:])
    assert "resolve" in await h.events(case.id)
    assert any(RESULT in t for t in h.texts(RESIDENT2) + h.texts(BUILDING12_CHAT))


async def test_fail_needs_a_reason_and_can_be_cancelled(h: Harness) -> None:
    case = await housing_case(h)
    await resolve(h, case.id)
    await h.press(HEAD, h.card(HEAD, case.id), "❌ 不通过")
    await h.private(HEAD, photo="check-9")
    assert "请再发送核查不通过的原因" in h.last(HEAD).text
    await h.private(HEAD, "   ")
    assert "文字" in h.last(HEAD).text
    await h.private(HEAD, "没有修")
    await h.press(HEAD, h.last(HEAD), "取消")
    assert (await h.case(case.id)).status == "checking"
    # The preview's submit, pressed after the cancel, has expired.
    await h.press_data(HEAD, "kf:ok")
    assert h.answers()[-1] == "该操作已过期，请重新开始。"
    assert (await h.case(case.id)).status == "checking"


async def test_a_reason_submitted_after_the_timeout_is_stale(h: Harness) -> None:
    case = await housing_case(h)
    await resolve(h, case.id)
    await h.press(HEAD, h.card(HEAD, case.id), "❌ 不通过")
    await h.private(HEAD, photo="check-late")
    await h.private(HEAD, "没有修好")
    preview = h.last(HEAD)
    await h.advance(timedelta(days=1, minutes=1))
    assert (await h.case(case.id)).checked == "unchecked"
    await h.press(HEAD, preview, "提交核查意见")
    assert "失效" in h.last(HEAD).text
    late = await h.case(case.id)
    assert (late.status, late.round) == ("resolved", 1)
    async with h.app.sessions() as db:
        left = await db.scalar(select(func.count()).select_from(PendingPhoto)
                               .where(PendingPhoto.chat_id == HEAD))
        kept = await db.scalar(select(func.count()).select_from(CasePhoto)
                               .where(CasePhoto.kind == "check"))
    assert (left, kept) == (0, 0), "the photos neither join the case nor wait as drafts"


async def test_english_check_card_and_timeout(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, locale="en")
    try:
        case = await h.report_in_group("Water pipe leaking")
        await h.press_data(HEAD, f"c1:cs:{case.id}:{case.rev}:housing")
        await h.press_data(HEAD, f"c1:vc:{case.id}:{case.rev}")
        await h.press(LEADER, h.card(LEADER, case.id), "Resolve")
        await h.private(LEADER, "Pipe replaced")
        await h.press(LEADER, h.last(LEADER), "Submit result")
        card = h.card(HEAD, case.id)
        assert card.labels == ["✅ Pass", "❌ Fail"] and "Pipe replaced" in card.text
        await h.advance(timedelta(days=1, minutes=1))
        assert "not checked on site in time" in mentions(h, LEADER, case.id)[-1]
    finally:
        await h.app.close()


# --- who may tap ---------------------------------------------------------------------------

# In: the housing case of BSY-01-03 waiting for its check. Out: BSY-02-12's case, put in
# `checking` directly (the building has no head, so it is never checked on its own).
CHECK_RULES = """
button      resident unit_head building_head grid_member grid_leader community street stranger
check_pass  N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
check_fail  N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
"""
RULES = parse_rules(CHECK_RULES)
INSIDE, OUTSIDE = 1, 2


@dataclass(frozen=True)
class Tap:
    action: Action
    reason: str | None = None


TAPS = {"check_pass": Tap(Action.CHECK_PASS), "check_fail": Tap(Action.CHECK_FAIL, "仍在漏水")}
_SNAPSHOT: dict[str, Snapshot] = {}


async def _build(h: Harness) -> None:
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        b03, u1, b12 = [await node_by_code(db, c) for c in ("BSY-01-03", "BSY-01-03/1",
                                                                  "BSY-02-12")]
        assert b03 is not None and u1 is not None and b12 is not None
        await ensure_person(db, RESIDENT, "居民甲", tx.now)
        await ensure_person(db, RESIDENT2, "居民乙", tx.now)
        inside = await cases.report(tx, cases.ReportInput(
            building_id=b03.id, unit_id=u1.id, reporter_id=RESIDENT, description="水管漏水",
            category="housing", source_chat_id=UNIT_CHAT, source_message_id=11))
        outside = await cases.report(tx, cases.ReportInput(
            building_id=b12.id, reporter_id=RESIDENT2, description="12号楼水管漏水",
            category="housing", source_chat_id=BUILDING12_CHAT, source_message_id=12))
        assert (inside.id, outside.id) == (INSIDE, OUTSIDE)
        head, leader = [await load_actor(db, p) for p in (HEAD, LEADER)]
        await cases.confirm(tx, head, inside.id, inside.rev)
        await cases.resolve(tx, leader, inside.id, inside.rev, "已修好")
        assert inside.status == "checking"
        outside.status, outside.checked, outside.rev = "checking", "pending", outside.rev + 1
        outside.result, outside.resolved_at, outside.resolved_by_id = "已修好", tx.now, LEADER2
        await db.commit()
    await h.deliver()


@pytest.fixture
async def checking(tmp_path: Path, snapshots: Path) -> AsyncIterator[Harness]:  # noqa: F811
    if "checking" not in _SNAPSHOT:
        where = snapshots / "checks-checking"
        where.mkdir()
        built = await make_harness(where)
        await _build(built)
        await built.app.close()
        _SNAPSHOT["checking"] = await Snapshot.take("checks_checking", where)
    await _SNAPSHOT["checking"].restore(tmp_path)
    h = await make_harness(tmp_path, load=False)
    yield h
    await h.app.close()


async def _state(h: Harness, case_id: int) -> tuple[object, ...]:
    case = await h.case(case_id)
    async with h.app.sessions() as db:
        events = await db.scalar(select(func.count()).select_from(CaseEvent)
                                 .where(CaseEvent.case_id == case_id))
    return case.status, case.rev, case.round, case.checked, events


@pytest.mark.parametrize(("button", "role", "scope"), sorted(RULES))
async def test_who_may_tap(button: str, role: str, scope: str, checking: Harness) -> None:
    h = checking
    expected = RULES[(button, role, scope)]
    tap, user = TAPS[button], ROLES[role]
    case_id = INSIDE if scope == "in" else OUTSIDE
    case = await h.case(case_id)
    before = await _state(h, case_id)
    await h.press_data(user, CaseButton(tap.action, case.id, case.rev).pack())
    answer = h.answers()[-1]
    if expected == "N":
        assert "无权" in answer, answer
        assert h.texts(user) == [], "no prompt follows a refusal"
        assert await _state(h, case_id) == before
        return
    assert "无权" not in answer and "失效" not in answer, answer
    if tap.reason is not None:
        await h.private(user, tap.reason)
        await h.press(user, h.last(user), "提交核查意见")
        after = await h.case(case_id)
        assert (after.status, after.round) == ("open", 2)
    else:
        after = await h.case(case_id)
        assert (after.status, after.checked) == ("resolved", "passed")


async def test_a_stale_check_button_changes_nothing(checking: Harness) -> None:
    h = checking
    case = await h.case(INSIDE)
    old = CaseButton(Action.CHECK_PASS, case.id, case.rev).pack()
    await h.press_data(HEAD, old)
    assert (await h.case(INSIDE)).status == "resolved"
    for data in (old, CaseButton(Action.CHECK_FAIL, case.id, case.rev).pack()):
        await h.press_data(HEAD, data)
        assert "失效" in h.answers()[-1]
    assert (await h.case(INSIDE)).status == "resolved"
