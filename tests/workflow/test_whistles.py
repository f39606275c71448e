"""吹哨报到 through the real Dispatcher with a moved clock: a grid leader or supervisor calls a
department in from the card; its people get the case card privately (or in its work chat,
phones masked), 报到 and 已处理 go back to the handler, a department that does not acknowledge
in time goes to the street once, and resolving the case withdraws what is still open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select

from bot.cases.albums import count_draft_photos
from bot.cases.registry_edit import apply_registry
from bot.org.registry import parse_registry
from storage.models import Case, CasePhoto, Whistle
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    MARKET,
    MEMBER,
    POLICE,
    POLICE_CHAT,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    Harness,
    fresh_database,
    make_harness,
)
from tests.test_access import ROLES, parse_rules, run_in, snapshots  # noqa: F401

ASK = "请派民警到场处置占道经营"
REPORTER_NAME = "居民王芳"
PHONE = "13812345678"


async def confirmed(h: Harness, *, accept: bool = True) -> Case:
    """A photo report in the building group, confirmed by the head (and accepted)."""
    await h.say(BUILDING_CHAT, RESIDENT, photo="p-report", name=REPORTER_NAME,
                caption=f"/report 楼下夜市占道经营，影响通行，联系电话 {PHONE}")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    if accept:
        await h.press(LEADER, h.card(LEADER, case.id), "受理")
    return await h.case(case.id)


async def blow(h: Harness, case: Case, *, by: int = LEADER, department: str = "莲花派出所",
               ask: str = ASK) -> None:
    """吹哨 from the card: pick the department, write what is needed."""
    await h.press_data(by, f"c1:wh:{case.id}:{case.rev}")
    picker = h.last(by)
    assert f"#{case.id}" in picker.text and "部门" in picker.text
    await h.press(by, picker, department)
    assert "做什么" in h.last(by).text
    await h.private(by, ask)


async def whistles_of(h: Harness, case_id: int) -> list[Whistle]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(Whistle).where(Whistle.case_id == case_id)
                                      .order_by(Whistle.id))).all())


def whistle_events(events: list[str]) -> list[str]:
    return [e for e in events if e.startswith("whistle")]


async def test_called_acknowledged_and_done(h: Harness) -> None:
    case = await confirmed(h)
    assert "吹哨" in await h.all_labels(LEADER, h.card(LEADER, case.id))
    await blow(h, case)
    assert "已吹哨" in h.last(LEADER).text and "莲花派出所" in h.last(LEADER).text
    [whistle] = await whistles_of(h, case.id)
    assert (whistle.status, whistle.called_by_id, whistle.ask) == ("called", LEADER, ASK)
    assert whistle.ack_due_at == h.clock.now() + timedelta(minutes=30)
    after = await h.case(case.id)
    # Not a transition: the case's rev and status stay, its timer reads whistle_due_at.
    assert (after.status, after.rev) == ("accepted", case.rev)
    assert after.whistle_due_at == whistle.ack_due_at
    assert after.next_check_at is not None and after.next_check_at <= whistle.ack_due_at
    # The police get the case card privately: photos, place, the ask; not the reporter.
    card = h.last(POLICE)
    assert card.photos == ["p-report"]
    assert f"#{case.id}" in card.text and ASK in card.text and "楼下夜市" in card.text
    assert "幸福里" in card.text or "柏树郢" in card.text
    assert REPORTER_NAME not in card.text and "反映人" not in card.text
    assert card.labels == ["🙋 报到", "✅ 已处理"]
    assert h.texts(POLICE_CHAT) == []
    # 报到: the card keeps 已处理 only; the leader hears who acknowledged.
    await h.press(POLICE, card, "🙋 报到")
    assert h.answers()[-1] == "已报到，已告知办理人。"
    assert card.labels == ["✅ 已处理"]
    told = h.last(LEADER).text
    assert "已报到" in told and "社区民警小李" in told and ASK in told
    acked = (await whistles_of(h, case.id))[0]
    assert (acked.status, acked.acked_by_id, acked.acked_at) == ("acked", POLICE,
                                                                 h.clock.now())
    assert (await h.case(case.id)).whistle_due_at is None
    # 已处理: a note and a photo, a preview, then 提交.
    h.clock.advance(timedelta(hours=2))
    await h.press(POLICE, card, "✅ 已处理")
    assert "处理情况" in h.last(POLICE).text
    await h.private(POLICE, photo="p-police")
    assert "再写一句" in h.last(POLICE).text
    await h.private(POLICE, "已联合城管清理摊位，消防通道已畅通")
    preview = h.last(POLICE)
    assert "照片：1 张" in preview.text
    await h.press(POLICE, preview, "提交")
    assert "仍由原办理人办结" in h.last(POLICE).text
    done = h.last(LEADER)
    assert "已处理" in done.text and "消防通道已畅通" in done.text
    assert done.photos == ["p-police"]
    finished = (await whistles_of(h, case.id))[0]
    assert (finished.status, finished.done_by_id, finished.note) == (
        "done", POLICE, "已联合城管清理摊位，消防通道已畅通")
    async with h.app.sessions() as db:
        kinds = (await db.scalars(select(CasePhoto.kind).where(CasePhoto.case_id == case.id)
                                  .order_by(CasePhoto.id))).all()
    assert list(kinds) == ["report", "whistle"]
    # The case stays with its handler.
    end = await h.case(case.id)
    assert (end.status, end.level, end.rev) == ("accepted", "grid", case.rev)
    assert whistle_events(await h.events(case.id)) == ["whistle", "whistle_ack",
                                                       "whistle_done"]
    # A stale button: the whistle is done.
    await h.press_data(POLICE, f"w1:{whistle.id}:a")
    assert "已失效" in h.answers()[-1]
    await h.press_data(POLICE, f"w1:{whistle.id}:d")
    assert "已失效" in h.answers()[-1]


async def test_card_goes_to_the_work_chat_with_phones_masked(h: Harness) -> None:
    case = await confirmed(h)
    h.api.forbid(POLICE)
    await blow(h, case)
    copy = h.last(POLICE_CHAT)
    assert ASK in copy.text and PHONE not in copy.text and "楼下夜市" in copy.text
    assert REPORTER_NAME not in copy.text
    # 报到 and 已处理 from the work chat count as well; there the note is asked for as a
    # reply, and photos are not taken from the group.
    await h.press(POLICE, copy, "🙋 报到")
    assert (await whistles_of(h, case.id))[0].status == "acked"
    await h.press(POLICE, copy, "✅ 已处理")
    assert "处理情况" in h.last(POLICE_CHAT).text
    await h.say(POLICE_CHAT, POLICE, "已到场劝离，电话 13900001111 已登记")
    preview = h.last(POLICE_CHAT)
    assert "照片" not in preview.text
    await h.press(POLICE, preview, "提交")
    police = (await whistles_of(h, case.id))[0]
    assert (police.status, police.done_by_id) == ("done", POLICE)
    assert "已到场劝离" in h.last(LEADER).text
    # A department without a chat: the card waits for its person; nobody else gets it.
    h.api.forbid(MARKET)
    await blow(h, await h.case(case.id), department="莲花市场监管所", ask="请核查无证经营")
    market = (await whistles_of(h, case.id))[1]
    assert market.status == "called"
    assert not any("无证经营" in t for t in h.texts(POLICE_CHAT))


async def test_no_acknowledgement_is_escalated_to_the_street_once(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case)
    card = h.last(POLICE)
    await h.advance(timedelta(minutes=29))
    assert "whistle_escalate" not in await h.events(case.id)
    assert not any("超时未报到" in t for t in h.texts(STREET_SUP))
    await h.advance(timedelta(minutes=2))
    assert whistle_events(await h.events(case.id)) == ["whistle", "whistle_escalate"]
    told = [t for t in h.texts(STREET_SUP) if "超时未报到" in t]
    assert len(told) == 1
    assert "莲花派出所" in told[0] and ASK in told[0] and "应报到时间" in told[0]
    [whistle] = await whistles_of(h, case.id)
    assert whistle.escalated_at is not None and whistle.status == "called"
    after = await h.case(case.id)
    assert after.whistle_due_at is None and (after.status, after.level) == ("accepted",
                                                                             "grid")
    # Two more sweeps: once is all.
    await h.advance(timedelta(minutes=30))
    await h.advance(timedelta(hours=3))
    assert (await h.events(case.id)).count("whistle_escalate") == 1
    assert len([t for t in h.texts(STREET_SUP) if "超时未报到" in t]) == 1
    # 报到 after the escalation still works.
    await h.press(POLICE, card, "🙋 报到")
    assert h.answers()[-1] == "已报到，已告知办理人。"
    assert (await whistles_of(h, case.id))[0].status == "acked"


async def test_second_whistle_gets_its_own_escalation(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case)
    await h.advance(timedelta(minutes=20))
    await blow(h, await h.case(case.id), department="莲花市场监管所", ask="请核查无证经营")
    police, market = await whistles_of(h, case.id)
    assert (await h.case(case.id)).whistle_due_at == police.ack_due_at
    await h.advance(timedelta(minutes=11))
    assert (await h.events(case.id)).count("whistle_escalate") == 1
    assert (await h.case(case.id)).whistle_due_at == market.ack_due_at
    await h.advance(timedelta(minutes=20))
    assert (await h.events(case.id)).count("whistle_escalate") == 2
    assert (await h.case(case.id)).whistle_due_at is None


async def test_answers_move_the_due_time_to_the_next_whistle(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case)
    police_card = h.last(POLICE)
    h.clock.advance(timedelta(minutes=5))
    await blow(h, await h.case(case.id), department="莲花市场监管所", ask="请核查无证经营")
    market_card = h.last(MARKET)
    police, _market = await whistles_of(h, case.id)
    # The later one answered first: the due time stays the police's.
    await h.press(MARKET, market_card, "🙋 报到")
    assert (await h.case(case.id)).whistle_due_at == police.ack_due_at
    h.clock.advance(timedelta(minutes=5))
    await blow(h, await h.case(case.id), department="柏树郢物业公司", ask="请配合清理")
    estate = (await whistles_of(h, case.id))[2]
    # 已处理 straight away counts as 报到 too, and the due time moves to the next one.
    await h.press(POLICE, police_card, "✅ 已处理")
    await h.private(POLICE, "已到场")
    await h.press(POLICE, h.last(POLICE), "提交")
    done = (await whistles_of(h, case.id))[0]
    assert (done.status, done.acked_by_id, done.acked_at) == ("done", POLICE, h.clock.now())
    assert (await h.case(case.id)).whistle_due_at == estate.ack_due_at
    await h.advance(timedelta(minutes=31))
    assert whistle_events(await h.events(case.id)).count("whistle_escalate") == 1
    assert [w.escalated_at is not None for w in await whistles_of(h, case.id)] == [
        False, False, True]


async def test_resolve_withdraws_open_whistles_and_tells_the_department(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case)
    police_card = h.last(POLICE)
    await h.press(POLICE, police_card, "🙋 报到")
    await blow(h, await h.case(case.id), department="莲花市场监管所", ask="请核查无证经营")
    market_card = h.last(MARKET)
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "摊位已清理，通道畅通")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    assert (await h.case(case.id)).status == "resolved"
    assert [w.status for w in await whistles_of(h, case.id)] == ["withdrawn", "withdrawn"]
    assert (await h.case(case.id)).whistle_due_at is None
    assert "已撤回" in h.last(POLICE).text and "已撤回" in h.last(MARKET).text
    assert (await h.events(case.id)).count("whistle_withdraw") == 2
    # Their buttons are stale now, and no escalation follows.
    await h.press(POLICE, police_card, "✅ 已处理")
    assert "已失效" in h.answers()[-1]
    await h.press(MARKET, market_card, "🙋 报到")
    assert "已失效" in h.answers()[-1]
    await h.advance(timedelta(hours=1))
    assert "whistle_escalate" not in await h.events(case.id)


async def test_without_departments_there_is_no_button_and_no_statement(
        tmp_path: Path) -> None:
    """A district whose registry lists no department: no 吹哨 on the card, and resolving a
    case reads no whistle (withdraw_open answers from the case row and the directory)."""
    # load=False opens the database as it is: on a server, empty it of the last test's rows.
    await fresh_database(tmp_path, "t.db")
    h = await make_harness(tmp_path, load=False)
    try:
        text = SAMPLE.read_text("utf-8").split("\ndepartments:")[0]
        async with h.app.sessions() as db:
            await apply_registry(db, parse_registry(text), h.clock)
        case = await confirmed(h)
        assert "吹哨" not in await h.all_labels(LEADER, h.card(LEADER, case.id))
        await h.press_data(LEADER, f"c1:wh:{case.id}:{case.rev}")
        assert "没有可吹哨的部门" in h.answers()[-1]
        seen: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            seen.append(statement)

        await h.press(LEADER, h.card(LEADER, case.id), "办结")
        engine = h.app.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            await h.private(LEADER, "摊位已清理")
            await h.press(LEADER, h.last(LEADER), "提交办结")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert (await h.case(case.id)).status == "resolved"
        assert seen and not [st for st in seen if "whistles" in st]
    finally:
        await h.app.close()


async def test_case_history_lists_every_whistle_event(h: Harness) -> None:
    case = await confirmed(h)
    await blow(h, case)
    card = h.last(POLICE)
    await h.advance(timedelta(minutes=31))
    await h.press(POLICE, card, "🙋 报到")
    await h.press(POLICE, card, "✅ 已处理")
    await h.private(POLICE, "已到场劝离")
    await h.press(POLICE, h.last(POLICE), "提交")
    await h.private(LEADER, f"/case {case.id}")
    lines = h.last(LEADER).text.splitlines()
    local = h.app.ctx.texts.with_timezone("Asia/Shanghai").local_time
    called, late = local(h.clock.now() - timedelta(minutes=31)), local(h.clock.now())
    for line in (f"{called} 网格长甲 吹哨：莲花派出所：{ASK}",
                 f"{late} 系统 部门超时未报到，报街道：莲花派出所",
                 f"{late} 社区民警小李 部门报到：莲花派出所",
                 f"{late} 社区民警小李 部门已处理：莲花派出所：已到场劝离"):
        assert line in lines, (line, lines)


async def test_who_may_not(h: Harness) -> None:
    case = await confirmed(h)
    # A grid member and the building head may not blow the whistle.
    for who in (MEMBER, HEAD):
        await h.press_data(who, f"c1:wh:{case.id}:{case.rev}")
        assert "无权" in h.answers()[-1]
    assert await whistles_of(h, case.id) == []
    await blow(h, case)
    [whistle] = await whistles_of(h, case.id)
    # Staff, and another department, may not answer for the police.
    for who in (LEADER, COMMUNITY_SUP, STREET_SUP, HEAD, MARKET, RESIDENT):
        for answer in ("a", "d"):
            await h.press_data(who, f"w1:{whistle.id}:{answer}")
            assert "不是该部门的联系人" in h.answers()[-1], who
    assert (await whistles_of(h, case.id))[0].status == "called"
    # A whistle on a case that moved on: the leader's old 吹哨 button is stale.
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要社区协调")
    await h.press_data(LEADER, f"c1:wh:{case.id}:{case.rev}")
    assert "已失效" in h.answers()[-1] or "新进展" in h.answers()[-1]


async def test_cancel_leaves_the_picker_and_the_note(h: Harness) -> None:
    case = await confirmed(h)
    await h.press_data(LEADER, f"c1:wh:{case.id}:{case.rev}")
    picker = h.last(LEADER)
    assert picker.labels == ["莲花派出所", "莲花市场监管所", "柏树郢物业公司", "取消"]
    await h.press(LEADER, picker, "取消")
    await h.private(LEADER, ASK)
    assert await whistles_of(h, case.id) == []
    await blow(h, await h.case(case.id))
    card = h.last(POLICE)
    await h.press(POLICE, card, "✅ 已处理")
    await h.private(POLICE, photo="p-draft")
    await h.private(POLICE, "/cancel")
    assert "已取消" in h.last(POLICE).text
    await h.press(POLICE, card, "✅ 已处理")
    await h.private(POLICE, "已到场")
    assert "照片：0 张" in h.last(POLICE).text
    await h.press(POLICE, h.last(POLICE), "取消")
    assert (await whistles_of(h, case.id))[0].status == "called"
    # The preview's 提交 after 取消 is expired.
    await h.press_data(POLICE, "wn:ok")
    assert "过期" in h.answers()[-1]
    assert (await whistles_of(h, case.id))[0].status == "called"


async def test_prompt_goes_stale_when_the_case_moves_on(h: Harness) -> None:
    case = await confirmed(h)
    await h.press_data(LEADER, f"c1:wh:{case.id}:{case.rev}")
    await h.press(LEADER, h.last(LEADER), "莲花派出所")
    # Meanwhile the community supervisor takes the case up: the ask comes too late.
    await h.press_data(COMMUNITY_SUP, h.card(LEADER, case.id).button_data("上报"))
    await h.private(COMMUNITY_SUP, "需要街道协调")
    assert (await h.case(case.id)).level == "community"
    await h.private(LEADER, ASK)
    assert "新进展" in h.last(LEADER).text
    assert await whistles_of(h, case.id) == []
    # A department button pressed outside the picker's flow is expired.
    await h.press_data(LEADER, "wd:police")
    assert "过期" in h.answers()[-1]
    await h.press_data(POLICE, "wn:ok")
    assert "过期" in h.answers()[-1]


@pytest.mark.parametrize("data", ["w1:999:a", "w1:0:a", "w1:x:a", "w1:1:z", "w1:1",
                                  "w1:１:a"])
async def test_forged_department_answers_change_nothing(h: Harness, data: str) -> None:
    case = await confirmed(h)
    await blow(h, case)
    await h.press_data(POLICE, data)
    assert h.answers()[-1] in ("此按钮无效或已过期。",
                               "该吹哨已报到、已处理或已撤回，此按钮已失效。")
    assert (await whistles_of(h, case.id))[0].status == "called"


# --- who may tap: the case buttons' table, for 吹哨 and the department's answers -----------

# `wh` on an open case at grid level; `w1` (报到) on a whistle to the police on that case.
# No role of the registry answers for a department: only its own people (POLICE) may.
WHISTLE_RULES = """
button  resident unit_head building_head grid_member grid_leader community street stranger
whistle N/N      N/N       N/N           N/N         Y/N         Y/Y       Y/Y    N/N
w1_ack  N/N      N/N       N/N           N/N         N/N         N/N       N/N    N/N
"""
RULES = parse_rules(WHISTLE_RULES)


@pytest.mark.parametrize(("button", "role", "scope"), sorted(RULES))
async def test_access(button: str, role: str, scope: str,
                      run_in: Callable[[str], Awaitable[Harness]]) -> None:  # noqa: F811
    expected = RULES[(button, role, scope)]
    user = ROLES[role]
    h = await run_in("open")
    case_id = 1 if scope == "in" else 2
    case = await h.case(case_id)
    if button == "whistle":
        await h.press_data(user, f"c1:wh:{case.id}:{case.rev}")
        if expected == "N":
            assert "无权" in h.answers()[-1], h.answers()[-1]
            assert h.texts(user) == []
            assert await whistles_of(h, case_id) == []
            return
        await h.press(user, h.last(user), "莲花派出所")
        await h.private(user, ASK)
        [whistle] = await whistles_of(h, case_id)
        assert whistle.called_by_id == user
        assert any(ASK in t for t in h.texts(POLICE))
        return
    await blow(h, case, by=STREET_SUP)
    [whistle] = await whistles_of(h, case_id)
    await h.press_data(user, f"w1:{whistle.id}:a")
    assert "不是该部门的联系人" in h.answers()[-1]
    assert (await whistles_of(h, case_id))[0].status == "called"
    await h.press_data(POLICE, f"w1:{whistle.id}:a")
    assert (await whistles_of(h, case_id))[0].status == "acked"


async def test_a_refused_note_leaves_no_draft_photo(h: Harness) -> None:
    """已处理 with a photo, then the case is resolved before 提交: the submit is refused, and
    the photo, brought back by the rollback, must not wait to join the person's next report."""
    case = await confirmed(h)
    await blow(h, case)
    await h.press(POLICE, h.last(POLICE), "✅ 已处理")
    await h.private(POLICE, photo="p-late")
    await h.private(POLICE, "已到场")
    preview = h.last(POLICE)
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "摊位已清理")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    await h.press(POLICE, preview, "提交")
    assert "已失效" in h.last(POLICE).text or "已失效" in h.answers()[-1]
    async with h.app.sessions() as db:
        assert await count_draft_photos(db, POLICE) == 0
