"""Requests to the level above (延期 / 挂账), the generic mechanism, through the Dispatcher.

The approval hook is each feature's (bot.workflow.extensions,
bot.workflow.suspension); here it is stubbed, so
what is tested is the mechanism: who gets the request, 同意 and 不同意 with a reason, expiry
through the timer model, withdrawal when the case moves, and stale or forged answers.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.cases import lifecycle as cases
from bot.context import Tx, begin
from bot.errors import DomainError
from bot.org.roles import Actor, Lineage, load_actor
from bot.workflow import case_requests, extensions
from storage.models import Case, CaseRequest
from tests.harness import COMMUNITY_SUP, HEAD, LEADER, MEMBER, STREET_SUP, Harness

TWO_DAYS = 2 * 86400


async def confirmed(h: Harness) -> Case:
    case = await h.report_in_group("楼道灯坏了")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def ask(h: Harness, case_id: int, *, by: int = LEADER,
              reason: str = "需要更换整条线路，等物业采购") -> CaseRequest:
    """An extension request made through the domain, as bot.workflow.extensions will make it."""
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        actor = await load_actor(db, by)
        current = await db.get(Case, case_id)
        assert current is not None
        case, lin = await cases.act(tx, actor, case_id, current.rev, "extend")
        req = await case_requests.open_request(tx, actor, case, lin, "extension", reason,
                                               seconds=TWO_DAYS)
        await cases.save(tx, case)
    await h.deliver()
    return req


async def request_row(h: Harness, request_id: int) -> CaseRequest:
    async with h.app.sessions() as db:
        req = await db.get(CaseRequest, request_id)
        assert req is not None
        return req


@pytest.fixture
def approve_hook(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The extension hook, stubbed: the deadline moves on by the request's length."""
    approved: list[int] = []

    async def approve(tx: Tx, case: Case, lin: Lineage, req: CaseRequest,
                      actor: Actor) -> None:
        assert case.request_at is None and req.status == "approved"
        case.extended_seconds += req.seconds or 0
        case.extension_count += 1
        approved.append(req.id)

    monkeypatch.setattr(extensions, "approve", approve)
    return approved


async def test_request_goes_above_and_approval_moves_the_deadline(
        h: Harness, approve_hook: list[int]) -> None:
    case = await confirmed(h)
    req = await ask(h, case.id)
    asked = await h.case(case.id)
    assert asked.request_at == h.clock.now() and asked.rev == case.rev
    assert await h.events(case.id) == ["report", "confirm", "extension_request"]
    card = h.last(COMMUNITY_SUP)
    assert f"#{case.id}" in card.text and "延期申请" in card.text
    assert "2 天" in card.text and "等物业采购" in card.text and "逾期未答复" in card.text
    assert card.labels == ["✅ 同意", "❌ 不同意"]
    # Only the nearest level above with someone in it is asked.
    assert not any(f"#{case.id}" in t for t in h.texts(STREET_SUP))
    # The handler accepting meanwhile moves the rev on; the approval still holds.
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    assert h.answers()[-1] == "已同意，已告知申请人。"
    assert approve_hook == [req.id]
    after = await h.case(case.id)
    assert after.request_at is None and after.status == "accepted"
    assert after.deadline_at == case.deadline_at + timedelta(seconds=TWO_DAYS)
    row = await request_row(h, req.id)
    assert (row.status, row.answered_by_id) == ("approved", COMMUNITY_SUP)
    told = h.last(LEADER).text
    assert "已获同意" in told and h.app.ctx.texts.with_timezone("Asia/Shanghai").local_time(
        after.deadline_at) in told
    # The answered card lost its buttons; pressing a copy of it again is stale.
    assert card.buttons == []
    await h.press_data(COMMUNITY_SUP, f"q1:{req.id}:y")
    assert "已失效" in h.answers()[-1]
    assert approve_hook == [req.id]


async def test_decline_asks_a_reason_and_tells_the_requester(
        h: Harness, approve_hook: list[int]) -> None:
    case = await confirmed(h)
    req = await ask(h, case.id)
    card = h.last(COMMUNITY_SUP)
    await h.press(COMMUNITY_SUP, card, "❌ 不同意")
    assert "理由" in h.last(COMMUNITY_SUP).text
    await h.private(COMMUNITY_SUP, "   ")
    assert "文字" in h.last(COMMUNITY_SUP).text
    await h.private(COMMUNITY_SUP, "时限足够，请抓紧办理")
    assert f"#{case.id}" in h.last(COMMUNITY_SUP).text
    row = await request_row(h, req.id)
    assert (row.status, row.answer_note) == ("declined", "时限足够，请抓紧办理")
    after = await h.case(case.id)
    assert after.request_at is None and after.deadline_at == case.deadline_at
    assert (await h.events(case.id))[-1] == "extension_decline"
    told = h.last(LEADER).text
    assert "未获同意" in told and "时限足够，请抓紧办理" in told
    assert approve_hook == []
    # Another request may be made now that this one is answered.
    again = await ask(h, case.id, reason="物业采购延误")
    assert again.id != req.id


async def test_unanswered_request_expires_and_its_buttons_go_stale(
        h: Harness, approve_hook: list[int]) -> None:
    case = await confirmed(h)
    req = await ask(h, case.id)
    card = h.last(COMMUNITY_SUP)
    await h.advance(timedelta(hours=23))
    assert (await request_row(h, req.id)).status == "pending"
    await h.advance(timedelta(hours=1, minutes=1))
    row = await request_row(h, req.id)
    assert row.status == "expired"
    after = await h.case(case.id)
    assert after.request_at is None and after.deadline_at == case.deadline_at
    assert "extension_expire" in await h.events(case.id)
    assert any("超时未获答复" in t for t in h.texts(LEADER))
    # The sweep takes it once.
    await h.advance(timedelta(hours=1))
    assert (await h.events(case.id)).count("extension_expire") == 1
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    assert "已失效" in h.answers()[-1]
    await h.press(COMMUNITY_SUP, card, "❌ 不同意")
    assert "已失效" in h.answers()[-1]
    assert approve_hook == []


async def test_escalation_withdraws_the_request(h: Harness, approve_hook: list[int]) -> None:
    case = await confirmed(h)
    req = await ask(h, case.id)
    card = h.last(COMMUNITY_SUP)
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要社区协调")
    after = await h.case(case.id)
    assert after.level == "community" and after.request_at is None
    assert (await request_row(h, req.id)).status == "withdrawn"
    assert await h.events(case.id) == ["report", "confirm", "extension_request", "escalate",
                                       "extension_withdraw"]
    assert any("已撤回" in t for t in h.texts(LEADER))
    await h.press(COMMUNITY_SUP, card, "✅ 同意")
    assert "已失效" in h.answers()[-1]
    assert approve_hook == []


async def test_who_may_ask_and_answer(h: Harness, approve_hook: list[int]) -> None:
    case = await confirmed(h)
    # A grid member does not ask while the grid has a leader; supervisors do not ask for a
    # grid case either: they answer.
    for who in (MEMBER, COMMUNITY_SUP, STREET_SUP, HEAD):
        with pytest.raises(DomainError) as refused:
            await ask(h, case.id, by=who)
        assert refused.value.code == "not_allowed"
    req = await ask(h, case.id)
    with pytest.raises(DomainError) as pending:
        await ask(h, case.id)
    assert pending.value.code == "request_pending"
    # The requester and the building head may not answer; the street (above) may.
    for who in (LEADER, HEAD, MEMBER):
        await h.press_data(who, f"q1:{req.id}:y")
        assert "无权" in h.answers()[-1]
    assert (await request_row(h, req.id)).status == "pending"
    await h.press_data(STREET_SUP, f"q1:{req.id}:y")
    assert (await request_row(h, req.id)).answered_by_id == STREET_SUP


@pytest.mark.parametrize("data", ["q1:999:y", "q1:0:y", "q1:x:y", "q1:1:z", "q1:1", "q1:１:y"])
async def test_forged_answers_change_nothing(h: Harness, data: str,
                                             approve_hook: list[int]) -> None:
    case = await confirmed(h)
    await ask(h, case.id)
    await h.press_data(COMMUNITY_SUP, data)
    assert h.answers()[-1] in ("此按钮无效或已过期。",
                               "该申请已答复、已超时或已撤回，此按钮已失效。")
    assert (await h.case(case.id)).request_at is not None
    assert approve_hook == []


async def test_no_request_buttons_while_the_features_are_off(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.workflow import suspension, whistles
    for module in (extensions, suspension, whistles):
        monkeypatch.setattr(module, "ENABLED", False)
    case = await confirmed(h)
    labels = await h.all_labels(LEADER, h.card(LEADER, case.id))
    assert not {"申请延期", "挂账", "吹哨"} & set(labels)
    # A forged 申请延期 press is refused as a button this bot does not have yet.
    await h.press_data(LEADER, f"c1:xr:{case.id}:{case.rev}")
    assert h.answers()[-1] == "此按钮无效或已过期。"
