"""Privacy of the workflow's tables: requests to the level above (延期 / 挂账) and whistles
(吹哨报到) are exported for the people in them and kept without them on erasure; a department's
contact is not erased while the registry lists them.
"""

from __future__ import annotations

import html

import pytest
from sqlalchemy import select

from bot.cases import lifecycle as cases
from bot.cases.registry_edit import apply_registry
from bot.context import begin
from bot.ops.privacy import PrivacyError, erase_person, export_person
from bot.org.registry import parse_registry
from bot.org.roles import load_actor
from bot.workflow import approvals, case_requests
from storage.models import Case, CaseRequest, Department, Person, Whistle
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    POLICE,
    RESIDENT,
    SAMPLE,
    Harness,
)
from tests.ops.test_privacy import MASKED, NAME, PHONE, assert_gone

POLICE_NAME = "社区民警小李"
POLICE_LINE = "      - {id: 950001, name: 社区民警小李}\n"
LEADER_LINE = "            leader: {id: 920001, name: 网格长甲}\n"


async def story(h: Harness) -> Case:
    """A resident reports with their number; the leader asks for an extension that names
    them and the police officer, and the community declines it; the police were called in,
    acknowledged and answered."""
    await h.say(BUILDING_CHAT, RESIDENT, f"/report 水管漏水，请联系我{PHONE}", name=NAME)
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    rev = (await h.case(case.id)).rev
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        leader = await load_actor(db, LEADER)
        current, lin = await cases.act(tx, leader, case.id, rev, "extend")
        req = await case_requests.open_request(
            tx, leader, current, lin, "extension",
            f"等{POLICE_NAME}到场，居民电话{PHONE}", seconds=2 * 86400)
        await cases.save(tx, current)
        police = await db.scalar(select(Department.id).where(Department.code == "police"))
        assert police is not None
        now = h.clock.now()
        db.add(Whistle(case_id=case.id, department_id=police, called_by_id=LEADER,
                       called_at=now, ask=f"请{POLICE_NAME}协调，居民电话{PHONE}",
                       status="done", acked_by_id=POLICE, acked_at=now, done_by_id=POLICE,
                       done_at=now, note="已到场处理，漏水由楼上住户引起"))
        await db.commit()
    await h.deliver()
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        sup = await load_actor(db, COMMUNITY_SUP)
        await approvals.answer(tx, sup, req.id, False, f"请{POLICE_NAME}先到场再说")
    await h.deliver()
    return await h.case(case.id)


async def test_export_holds_requests_and_whistles(h: Harness) -> None:
    case = await story(h)
    async with h.app.sessions() as db:
        leader = await export_person(db, LEADER, h.clock.now())
        sup = await export_person(db, COMMUNITY_SUP, h.clock.now())
        police = await export_person(db, POLICE, h.clock.now())
    [asked] = leader["case_requests"]
    assert (asked["case_id"], asked["kind"], asked["status"], asked["as"]) == (
        case.id, "extension", "declined", ["requested_by"])
    assert POLICE_NAME in asked["reason"] and asked["seconds"] == 2 * 86400
    [called] = leader["whistles"]
    assert (called["department"], called["as"]) == ("police", ["called_by"])
    assert sup["case_requests"][0]["as"] == ["answered_by"]
    assert sup["case_requests"][0]["answer_note"] == f"请{POLICE_NAME}先到场再说"
    assert police["departments"] == [{"code": "police", "name": "莲花派出所"}]
    [answered] = police["whistles"]
    assert answered["as"] == ["acked_by", "done_by"] and "楼上住户" in answered["note"]


async def test_a_department_contact_is_not_erased_while_listed(h: Harness) -> None:
    await story(h)
    async with h.app.sessions() as db:
        with pytest.raises(PrivacyError) as raised:
            await erase_person(db, POLICE)
    message = str(raised.value)
    assert "\n" not in message and "departments" in message and "police" in message
    async with h.app.sessions() as db:
        assert await db.get(Person, POLICE) is not None
    # Off the registry (another officer in their place), they are erased from the whistle
    # and from the texts that named them.
    text = SAMPLE.read_text("utf-8")
    assert text.count(POLICE_LINE) == 1
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(
            text.replace(POLICE_LINE, "      - {id: 950002, name: 社区民警小赵}\n")), h.clock)
        erased = await erase_person(db, POLICE)
    assert erased.whistles == 1
    async with h.app.sessions() as db:
        [whistle] = (await db.execute(Whistle.__table__.select())).all()
        assert (whistle.acked_by_id, whistle.done_by_id, whistle.called_by_id) == (
            None, None, LEADER)
        [req] = (await db.execute(CaseRequest.__table__.select())).all()
        assert POLICE_NAME not in req.reason and POLICE_NAME not in (req.answer_note or "")
    await assert_gone(h, POLICE, [POLICE_NAME])


async def test_erasing_the_reporter_masks_their_number_in_requests_and_whistles(
        h: Harness) -> None:
    case = await story(h)
    async with h.app.sessions() as db:
        await erase_person(db, RESIDENT)
        [req] = (await db.execute(CaseRequest.__table__.select())).all()
        [whistle] = (await db.execute(Whistle.__table__.select())).all()
    assert MASKED in req.reason and PHONE not in req.reason
    assert MASKED in whistle.ask and PHONE not in whistle.ask
    # The staff's own words stay, and so does who acted.
    assert POLICE_NAME in whistle.ask and whistle.called_by_id == LEADER
    assert req.requested_by_id == LEADER and req.answered_by_id == COMMUNITY_SUP
    assert (await h.case(case.id)).reporter_id is None
    await assert_gone(h, RESIDENT, [NAME, html.escape(NAME), PHONE])


async def test_erasing_former_staff_clears_them_from_requests_and_whistles(h: Harness) -> None:
    await story(h)
    text = SAMPLE.read_text("utf-8")
    assert text.count(LEADER_LINE) == 1
    async with h.app.sessions() as db:
        with pytest.raises(PrivacyError, match="still holds roles"):
            await erase_person(db, LEADER)
        await apply_registry(db, parse_registry(text.replace(LEADER_LINE, "")), h.clock)
        erased = await erase_person(db, LEADER)
        [req] = (await db.execute(CaseRequest.__table__.select())).all()
        [whistle] = (await db.execute(Whistle.__table__.select())).all()
    assert (erased.requests, erased.whistles) == (1, 1)
    assert req.requested_by_id is None and req.answered_by_id == COMMUNITY_SUP
    assert whistle.called_by_id is None and whistle.acked_by_id == POLICE
    await assert_gone(h, LEADER, ["网格长甲"])
