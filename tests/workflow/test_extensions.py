"""延期 through the real Dispatcher with a moved clock: asked from the handler's card (a length
by button or typed, then a reason), answered above, and what the deadline and its reminders do.

The sample registry's case here is "other" (72h), reported and confirmed on Monday 10:00
local: deadline Thursday 10:00, due soon at 0.75 of the time, Wednesday 16:00.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.cases.buttons import Action, CaseButton
from bot.context import begin
from bot.errors import DomainError
from bot.org.roles import load_actor
from bot.workflow import extensions
from storage.models import Case, CaseRequest
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    SAMPLE,
    STREET_SUP,
    WORK_CHAT,
    Harness,
)
from tests.test_access import (  # noqa: F401  (fixtures)
    INSIDE,
    OUTSIDE,
    ROLES,
    parse_rules,
    reload,
    run_in,
    snapshots,
)

DAY = timedelta(days=1)


async def confirmed(h: Harness) -> Case:
    case = await h.report_in_group("楼道灯坏了")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def ask(h: Harness, case_id: int, length: str = "1 天", *, typed: str | None = None,
              reason: str = "需更换整条线路，等物业采购配件", by: int = LEADER) -> None:
    """申请延期 on the handler's latest card: a length (a button, or typed), then a reason."""
    await h.press(by, h.card(by, case_id), "申请延期")
    prompt = h.last(by)
    assert "申请延期多长时间" in prompt.text, prompt.text
    assert prompt.labels == ["1 天", "3 天", "7 天"]
    if typed is None:
        await h.press(by, prompt, length)
    else:
        await h.private(by, typed)
    assert "申请延期的理由" in h.last(by).text
    await h.private(by, reason)


async def request_of(h: Harness, case_id: int) -> CaseRequest:
    """The case's latest request."""
    async with h.app.sessions() as db:
        req = await db.scalar(select(CaseRequest).where(CaseRequest.case_id == case_id)
                              .order_by(CaseRequest.id.desc()).limit(1))
        assert req is not None
        return req


def press_extend(case: Case) -> str:
    return CaseButton(Action.EXTEND, case.id, case.rev).pack()


def reminders(h: Harness, word: str) -> list[str]:
    return [t for t in h.texts(LEADER) if word in t]


async def test_approved_extension_moves_the_deadline_and_the_reminders(h: Harness) -> None:
    case = await confirmed(h)
    assert "申请延期" in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await ask(h, case.id, "1 天")
    assert "已提交上级" in h.last(LEADER).text
    asked = await h.case(case.id)
    assert asked.request_at == h.clock.now() and asked.rev == case.rev
    card = h.last(COMMUNITY_SUP)
    assert "延期申请" in card.text and "1 天" in card.text and "等物业采购配件" in card.text
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    after = await h.case(case.id)
    assert after.deadline_at == case.deadline_at + DAY
    assert (after.extended_seconds, after.extension_count, after.request_at) == (86400, 1, None)
    assert await h.events(case.id) == ["report", "confirm", "extension_request",
                                       "extension_approve"]
    assert "已获同意" in h.last(LEADER).text and "11-27 10:00" in h.last(LEADER).text
    # /case: the new deadline with the original one kept, and the approval in the history.
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER)
    assert "11-27 10:00（已延期，原时限 11-26 10:00）" in detail.text, detail.text
    assert "同意延期" in detail.text and "+1d" in detail.text
    assert "申请延期" not in await h.all_labels(LEADER, detail)  # one extension per case by default
    # The old due-soon time passes in silence; the new one is 0.75 of the new time, which
    # falls on the old deadline, and it passes with no red light.
    await h.advance(timedelta(hours=54, minutes=1))  # Wednesday 16:01
    assert reminders(h, "临期") == []
    await h.advance(timedelta(hours=17, minutes=58))  # Thursday 09:59
    assert reminders(h, "临期") == []
    await h.advance(timedelta(minutes=2))  # Thursday 10:01: the old deadline
    assert len(reminders(h, "临期")) == 1 and "11-27 10:00" in reminders(h, "临期")[0]
    assert reminders(h, "超期") == []
    assert "overdue" not in await h.events(case.id)
    await h.advance(timedelta(hours=24))  # Friday 10:01: the new deadline
    assert len(reminders(h, "超期")) == 1
    # An escalation card made after the approval shows the extension too.
    await h.advance(timedelta(hours=24))
    assert (await h.case(case.id)).level == "community"
    # It reaches the supervisor on their reminder list (issue 21); its number opens the card.
    assert h.reminded(COMMUNITY_SUP, "自动上报", case.id) == 1
    card = await h.open_case(COMMUNITY_SUP, case.id)
    assert "已延期，原时限 11-26 10:00" in card.text


async def test_typed_length_and_a_bad_one(h: Harness) -> None:
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "申请延期")
    for bad in ("两天", "0d", "31d", "30m", "2w"):
        await h.private(LEADER, bad)
        assert "时长格式不对" in h.last(LEADER).text, bad
        assert h.last(LEADER).labels == ["1 天", "3 天", "7 天"]
    await h.private(LEADER, " 2D ")
    assert "申请延期 2 天" in h.last(LEADER).text
    await h.private(LEADER, "等待管线单位开挖")
    req = await request_of(h, case.id)
    assert (req.seconds, req.status, req.reason) == (2 * 86400, "pending", "等待管线单位开挖")
    assert "2 天" in h.last(COMMUNITY_SUP).text
    # 12h works too, and 30d is the most.
    assert extensions.parse_length("12h") == 12 * 3600
    assert extensions.parse_length("30d") == 30 * 86400
    # A length button pressed after the conversation ended is expired, not taken.
    await h.press_data(LEADER, "xl:3d")
    assert h.answers()[-1] == "该操作已过期，请重新开始。"


async def test_declined_with_a_reason_and_the_handler_told(h: Harness) -> None:
    case = await confirmed(h)
    await ask(h, case.id, "3 天")
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "❌ 不同意")
    await h.private(COMMUNITY_SUP, "时限足够，请抓紧办理")
    after = await h.case(case.id)
    assert after.deadline_at == case.deadline_at and after.extension_count == 0
    assert (await request_of(h, case.id)).status == "declined"
    told = h.last(LEADER).text
    assert "未获同意" in told and "时限足够，请抓紧办理" in told
    # Declined is not used up: the handler may ask again.
    await ask(h, case.id, "1 天", reason="配件到货延误")
    assert (await request_of(h, case.id)).reason == "配件到货延误"


async def test_unanswered_request_expires_and_the_answer_goes_stale(h: Harness) -> None:
    case = await confirmed(h)
    await ask(h, case.id)
    card = h.last(COMMUNITY_SUP)
    await h.advance(timedelta(hours=23, minutes=59))
    assert (await request_of(h, case.id)).status == "pending"
    await h.advance(timedelta(minutes=2))
    assert (await request_of(h, case.id)).status == "expired"
    assert "extension_expire" in await h.events(case.id)
    assert any("超时未获答复" in t for t in h.texts(LEADER))
    after = await h.case(case.id)
    assert after.deadline_at == case.deadline_at and after.request_at is None
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    assert "已失效" in h.answers()[-1]
    assert (await h.case(case.id)).extended_seconds == 0


async def test_refused_after_the_deadline_at_the_tap_and_at_the_request(h: Harness) -> None:
    case = await confirmed(h)
    # Asked before the deadline, the reason typed after it: refused when it is sent.
    await h.press(LEADER, h.card(LEADER, case.id), "申请延期")
    await h.press(LEADER, h.last(LEADER), "1 天")
    await h.advance(timedelta(hours=72, minutes=1))
    await h.private(LEADER, "等物业采购")
    assert "已过办结时限" in h.last(LEADER).text
    assert "extension_request" not in await h.events(case.id)
    # And the button is refused, and no longer offered.
    current = await h.case(case.id)
    await h.press_data(LEADER, press_extend(current))
    assert "已过办结时限" in h.answers()[-1]
    await h.private(LEADER, f"/case {case.id}")
    assert "申请延期" not in await h.all_labels(LEADER, h.last(LEADER))


async def test_refused_beyond_the_maximum_and_while_pending(h: Harness) -> None:
    case = await confirmed(h)
    await ask(h, case.id)
    # Pending: refused, and the button is gone from /case.
    await h.press_data(LEADER, press_extend(await h.case(case.id)))
    assert "等待上级答复" in h.answers()[-1]
    await h.private(LEADER, f"/case {case.id}")
    assert "申请延期" not in await h.all_labels(LEADER, h.last(LEADER))
    await h.press(COMMUNITY_SUP, h.last(COMMUNITY_SUP), "✅ 同意")
    # One approved: the default maximum is reached.
    await h.press_data(LEADER, press_extend(await h.case(case.id)))
    assert "已达上限" in h.answers()[-1]
    assert len(await h.events(case.id)) == 4


async def test_max_extensions_zero_turns_it_off(h: Harness) -> None:
    text = SAMPLE.read_text("utf-8")
    assert text.count("max_extensions: 1 ") == 1
    await reload(h, text.replace("max_extensions: 1 ", "max_extensions: 0 "))
    case = await confirmed(h)
    assert "申请延期" not in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await h.press_data(LEADER, press_extend(case))
    assert "未开通延期" in h.answers()[-1]
    assert h.texts(COMMUNITY_SUP) == [] or all(f"#{case.id}" not in t
                                               for t in h.texts(COMMUNITY_SUP))


async def test_no_button_without_supervisors_above(h: Harness) -> None:
    text = SAMPLE.read_text("utf-8")
    street = "    supervisors:\n      - {id: 900001, name: 街道综治中心值班员}\n"
    community = "        supervisors:\n          - {id: 910001, name: 社区网格服务管理中心}\n"
    assert text.count(street) == 1 and text.count(community) == 1
    await reload(h, text.replace(street, "").replace(community, ""))
    case = await confirmed(h)
    assert "申请延期" not in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await h.press_data(LEADER, press_extend(case))
    assert "上级未设负责人" in h.answers()[-1]
    await h.private(LEADER, f"/case {case.id}")
    assert "申请延期" not in await h.all_labels(LEADER, h.last(LEADER))


async def test_asked_from_the_work_chat_copy_the_questions_are_his(h: Harness) -> None:
    """A leader who has not started the bot presses the work chat's copy of the card: the
    questions come in the work chat, named for him, and only his answers count."""
    h.api.forbid(LEADER)
    case = await confirmed(h)
    card = h.card(WORK_CHAT, case.id)
    await h.press(LEADER, card, "申请延期")
    prompt = h.last(WORK_CHAT)
    assert "申请延期多长时间" in prompt.text and prompt.text.startswith(f"user{LEADER} ")
    # A grid member's press on his question is not an answer.
    await h.press(MEMBER, prompt, "7 天")
    assert h.answers()[-1] == "该操作已过期，请重新开始。"
    await h.say(WORK_CHAT, LEADER, "5d")
    assert "申请延期 5 天" in h.last(WORK_CHAT).text
    await h.say(WORK_CHAT, MEMBER, "这不是理由")
    await h.say(WORK_CHAT, LEADER, "涉及多户协调")
    req = await request_of(h, case.id)
    assert (req.seconds, req.reason, req.requested_by_id) == (5 * 86400, "涉及多户协调", LEADER)
    assert any("已提交上级" in t for t in h.texts(WORK_CHAT))


async def test_no_button_and_no_prompt_while_the_feature_is_off(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "ENABLED", False)
    case = await confirmed(h)
    assert "申请延期" not in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await h.press_data(LEADER, press_extend(case))
    assert h.answers()[-1] == "此按钮无效或已过期。"
    assert (await h.case(case.id)).request_at is None


# --- who may tap ---------------------------------------------------------------------------

TAP_RULES = """
button  resident unit_head building_head grid_member grid_leader community street stranger
xr      N/N      N/N       N/N           N/N         Y/N         N/N       N/N    N/N
q1      N/N      N/N       N/N           N/N         N/N         Y/Y       Y/Y    N/N
"""
TAPS = parse_rules(TAP_RULES)


async def _request_by_domain(h: Harness, case_id: int, by: int) -> int:
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        actor = await load_actor(db, by)
        case = await db.get(Case, case_id)
        assert case is not None
        req = await extensions.request(tx, actor, case_id, case.rev, 86400, "等物业采购")
        rid = req.id
    await h.deliver()
    return rid


@pytest.mark.parametrize(("button", "role", "scope"), sorted(TAPS))
async def test_who_may_tap(button: str, role: str, scope: str,
                           run_in: Callable[[str], Awaitable[Harness]]) -> None:  # noqa: F811
    expected = TAPS[(button, role, scope)]
    user = ROLES[role]
    h = await run_in("open")
    case_id = INSIDE if scope == "in" else OUTSIDE
    if button == "xr":
        case = await h.case(case_id)
        await h.press_data(user, press_extend(case))
        answer = h.answers()[-1]
        if expected == "N":
            assert "无权" in answer, answer
            assert h.texts(user) == [], "no question follows a refusal"
            assert (await h.case(case_id)).request_at is None
            return
        assert "无权" not in answer and "失效" not in answer, answer
        await h.press(user, h.last(user), "3 天")
        await h.private(user, "需协调物业")
        after = await h.case(case_id)
        assert after.request_at is not None
        assert (await request_of(h, case_id)).seconds == 3 * 86400
        return
    rid = await _request_by_domain(h, case_id, LEADER if scope == "in" else LEADER2)
    await h.press_data(user, f"q1:{rid}:y")
    answer = h.answers()[-1]
    req = await request_of(h, case_id)
    if expected == "N":
        assert "无权" in answer, answer
        assert req.status == "pending"
        assert (await h.case(case_id)).extended_seconds == 0
        return
    assert req.status == "approved" and req.answered_by_id == user, answer
    assert (await h.case(case_id)).extended_seconds == 86400


async def test_domain_refusals_for_the_other_roles(h: Harness) -> None:
    """The request itself, not only the button, refuses those who do not hold the level."""
    case = await confirmed(h)
    for who in (MEMBER, COMMUNITY_SUP, STREET_SUP, HEAD):
        async with h.app.sessions() as db:
            tx = await begin(db, h.app.ctx)
            actor = await load_actor(db, who)
            with pytest.raises(DomainError) as refused:
                await extensions.request(tx, actor, case.id, case.rev, 86400, "理由")
            assert refused.value.code == "not_allowed"
    for seconds in (0, 1800, 31 * 86400, 5400):
        async with h.app.sessions() as db:
            tx = await begin(db, h.app.ctx)
            actor = await load_actor(db, LEADER)
            with pytest.raises(DomainError) as bad:
                await extensions.request(tx, actor, case.id, case.rev, seconds, "理由")
            assert bad.value.code == "bad_duration"
