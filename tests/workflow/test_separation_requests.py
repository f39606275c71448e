"""Whoever asks never approves (issue 19, defect 15, for 延期 and 挂账), through the Dispatcher.

社区书记兼网格长 is common: here the grid leader of BSY-01 (920001) is also a supervisor of its
community. Their request goes to another holder of the community's role, or one level up (the
street) when they are its only holder; where there is nobody else, it is refused, plainly, and
no request is made. They can never answer their own request, whichever button they press.
"""

from __future__ import annotations

from sqlalchemy import func, select

from storage.models import Case, CaseRequest
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    SAMPLE,
    STREET_SUP,
    Harness,
)
from tests.test_access import reload

COMMUNITY_LINE = "          - {id: 910001, name: 社区网格服务管理中心}\n"
LEADER_AS_SUPERVISOR = "          - {id: 920001, name: 网格长甲}\n"
STREET_BLOCK = "    supervisors:\n      - {id: 900001, name: 街道综治中心值班员}\n"


def registry(*, keep_community: bool, keep_street: bool = True) -> str:
    text = SAMPLE.read_text("utf-8")
    assert text.count(COMMUNITY_LINE) == 1 and text.count(STREET_BLOCK) == 1
    lines = (COMMUNITY_LINE if keep_community else "") + LEADER_AS_SUPERVISOR
    text = text.replace(COMMUNITY_LINE, lines)
    if not keep_street:
        text = text.replace(STREET_BLOCK, "")
    return text


async def confirmed(h: Harness) -> Case:
    case = await h.report_in_group("楼道灯坏了")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def ask_extension(h: Harness, case_id: int) -> None:
    await h.press(LEADER, h.card(LEADER, case_id), "申请延期")
    await h.press(LEADER, h.last(LEADER), "1 天")
    await h.private(LEADER, "需更换整条线路，等物业采购配件")


async def ask_suspension(h: Harness, case_id: int) -> None:
    await h.press(LEADER, h.card(LEADER, case_id), "挂账")
    await h.private(LEADER, "道路改造需区里立项，资金明年到位")
    await h.press(LEADER, h.last(LEADER), "30 天后")


def request_cards(h: Harness, who: int) -> list[str]:
    return [s.text for s in h.api.to(who)
            if any(str(b.get("callback_data", "")).startswith("q1:")
                   for r in s.buttons for b in r)]


async def request_row(h: Harness, case_id: int) -> CaseRequest | None:
    async with h.app.sessions() as db:
        return await db.scalar(select(CaseRequest).where(CaseRequest.case_id == case_id)
                               .order_by(CaseRequest.id.desc()).limit(1))


async def requests(h: Harness) -> int:
    async with h.app.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(CaseRequest)) or 0)


async def test_another_holder_of_the_role_approves(h: Harness) -> None:
    await reload(h, registry(keep_community=True))
    case = await confirmed(h)
    await ask_extension(h, case.id)
    req = await request_row(h, case.id)
    assert req is not None and req.approver_level == "community"
    # The other supervisor gets the request; the requester, a supervisor too, does not.
    assert len(request_cards(h, COMMUNITY_SUP)) == 1
    assert request_cards(h, LEADER) == []
    # Nor may they answer it, either way: refused, the request still pending.
    for answer in ("y", "n"):
        await h.press_data(LEADER, f"q1:{req.id}:{answer}")
        assert "本人" in h.answers()[-1], h.answers()[-1]
    row = await request_row(h, case.id)
    assert row is not None and row.status == "pending"
    assert (await h.case(case.id)).extension_count == 0
    await h.press_data(COMMUNITY_SUP, f"q1:{req.id}:y")
    row = await request_row(h, case.id)
    assert row is not None and (row.status, row.answered_by_id) == ("approved", COMMUNITY_SUP)


async def test_the_only_holder_asks_and_the_street_approves(h: Harness) -> None:
    await reload(h, registry(keep_community=False))
    case = await confirmed(h)
    await ask_suspension(h, case.id)
    req = await request_row(h, case.id)
    assert req is not None and req.approver_level == "street"
    assert request_cards(h, LEADER) == []
    [card] = request_cards(h, STREET_SUP)
    # The card says why the street is asked.
    assert "本人" in card and "街道" in card, card
    await h.press_data(LEADER, f"q1:{req.id}:y")
    assert "本人" in h.answers()[-1]
    assert (await h.case(case.id)).status == "open"
    await h.press_data(STREET_SUP, f"q1:{req.id}:y")
    assert (await h.case(case.id)).status == "suspended"


async def test_nobody_else_to_approve_refuses_plainly(h: Harness) -> None:
    await reload(h, registry(keep_community=False, keep_street=False))
    case = await confirmed(h)
    for label in ("申请延期", "挂账"):
        await h.press(LEADER, h.card(LEADER, case.id), label)
        said = h.answers()[-1]
        assert "本人" in said and "无人" in said, said
    assert await requests(h) == 0
    after = await h.case(case.id)
    assert after.request_at is None
