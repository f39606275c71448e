"""Privacy: a person's data exported and erased; groups never learn who reported nor their
number; logs at INFO and above carry no message text and no personal data.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from sqlalchemy import JSON, BigInteger, Integer, String, Text, select

from bot.cases.registry_edit import apply_registry
from bot.cli import main
from bot.context import begin
from bot.ops.privacy import PrivacyError, erase_person, export_person
from bot.org.registry import parse_registry
from bot.telegram.inbox import store
from storage.models import Base, Case, CaseEvent, Person
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    LEADER,
    MEMBER,
    RESIDENT,
    SAMPLE,
    STRANGER,
    UNIT_CHAT,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
    isolate_env,
    make_harness,
    refuse_inserts,
)

NAME = "王秀英"
PHONE = "13812345678"
MASKED = "138****5678"
PHONE2 = "13987654321"
REPORT = f"3单元楼道灯坏了，晚上很黑，请联系我{PHONE}"
DRAFT = f"门口垃圾三天没人清，电话{PHONE2}"
RESULT = f"已更换灯泡，已电话联系{PHONE}确认"


async def press_as(h: Harness, user: int, chat: int, label: str) -> None:
    """Press `label` on the latest message with that button in `chat`."""
    for sent in reversed(h.api.to(chat)):
        if label in sent.labels:
            await h.feed(h.updates.callback(user, sent.button_data(label), sent, name=NAME))
            return
    raise AssertionError(f"no {label!r} button in chat {chat}")


async def story(h: Harness) -> Case:
    """A resident with a name and a phone number reports in the building group; the case is
    verified, accepted and resolved while the bot cannot write to them, so the notice reaches
    them in the group, where they rate it. Then they start a private draft with a photo, and
    an update from them waits in the inbox.
    """
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {REPORT}", name=NAME)
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    h.api.forbid(RESIDENT)
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, RESULT)
    await h.press(LEADER, h.last(LEADER), "提交办结")
    await press_as(h, RESIDENT, BUILDING_CHAT, "满意")
    h.api.allow(RESIDENT)
    await h.private(RESIDENT, f"/report {DRAFT}", name=NAME)
    await press_as(h, RESIDENT, RESIDENT, "环境卫生")
    await h.private(RESIDENT, photo="draft-photo-1", name=NAME)
    waiting = h.updates.message(RESIDENT, RESIDENT, f"还有一件事 {PHONE2}", name=NAME)
    await store(h.app.sessions, [Update.model_validate(waiting)], h.clock.now())
    return await h.case(case.id)


# --- export --------------------------------------------------------------------------------


async def test_export_holds_everything_about_the_person(h: Harness) -> None:
    case = await story(h)
    async with h.app.sessions() as db:
        data = await export_person(db, RESIDENT, h.clock.now())
    json.dumps(data, ensure_ascii=False)  # JSON-ready as it is
    assert data["user_id"] == RESIDENT
    assert data["person"]["name"] == NAME and data["person"]["building"] == "BSY-01-03"
    assert data["roles"] == []
    [mine] = data["cases"]
    assert mine["id"] == case.id and mine["as"] == ["reporter", "submitted_by"]
    assert mine["description"] == REPORT and mine["place"] == "BSY-01-03"
    assert mine["status"] == "closed" and mine["rating"] == "good"
    assert [e["action"] for e in data["case_events"]] == ["report", "rate"]
    assert any(RESULT in m["text"] for m in data["messages"]), "the notice they were owed"
    [draft] = data["conversation_state"]
    assert draft["data"]["description"] == DRAFT
    assert [p["file_id"] for p in data["pending_photos"]] == ["draft-photo-1"]
    assert any(PHONE2 in json.dumps(u["payload"], ensure_ascii=False)
               for u in data["received_updates"])


async def test_export_of_staff_names_their_roles_and_what_they_did(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    async with h.app.sessions() as db:
        data = await export_person(db, LEADER, h.clock.now())
    assert data["roles"] == [{"role": "grid_leader", "place": "BSY-01",
                              "place_name": "柏树郢第一网格"}]
    assert data["cases"] == []
    assert data["cases_handled"] == [{"id": case.id, "as": ["accepted_by"],
                                      "status": "accepted"}]
    assert [e["action"] for e in data["case_events"]] == ["accept"]
    assert any(f"#{case.id}" in m["text"] for m in data["messages"])


async def test_nothing_held_about_an_unknown_id(h: Harness) -> None:
    async with h.app.sessions() as db:
        with pytest.raises(PrivacyError, match="nothing is held about Telegram user 4242"):
            await export_person(db, 4242, h.clock.now())
        with pytest.raises(PrivacyError, match="nothing is held"):
            await erase_person(db, 4242)


# --- erase ---------------------------------------------------------------------------------


async def everything(h: Harness) -> list[tuple[str, str, Any]]:
    """(table, column, value) for every value of every row of every table."""
    found: list[tuple[str, str, Any]] = []
    async with h.app.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(table.select())).mappings():
                for column in table.columns:
                    found.append((table.name, column.name, row[column.name]))
    return found


def as_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def assert_gone(h: Harness, user_id: int, needles: list[str]) -> None:
    """No column of any table holds the id, and no text holds any of `needles`."""
    text_types = (String, Text, JSON)
    kinds = {(t.name, c.name): c.type for t in Base.metadata.sorted_tables for c in t.columns}
    for table, column, value in await everything(h):
        if value is None:
            continue
        kind = kinds[(table, column)]
        if isinstance(kind, Integer | BigInteger):
            assert value != user_id, (table, column)
        if isinstance(kind, text_types) or isinstance(value, dict | list):
            text = as_text(value)
            for needle in [str(user_id), *needles]:
                assert needle not in text, (table, column, text[:200])


async def test_erase_keeps_the_case_but_nothing_that_leads_to_the_person(h: Harness) -> None:
    case = await story(h)
    before = await everything(h)
    # The story did spread the name and the number: in the case, the staff's cards, the
    # conversation state, the inbox.
    spread = {t for t, _, v in before if v is not None and NAME in as_text(v)}
    assert {"people", "outbox", "inbox"} <= spread, spread
    assert any(PHONE in as_text(v) for t, _, v in before if t == "outbox")

    async with h.app.sessions() as db:
        erased = await erase_person(db, RESIDENT)
    assert erased.cases == 1 and erased.person and erased.states == 1 and erased.photos == 1
    assert "erased Telegram user" in erased.summary()

    kept = await h.case(case.id)
    assert (kept.status, kept.category, kept.result, kept.rating) == (
        case.status, case.category, f"已更换灯泡，已电话联系{MASKED}确认", "good")
    assert (kept.building_id, kept.reported_at, kept.closed_at) == (
        case.building_id, case.reported_at, case.closed_at)
    assert kept.reporter_id is None and kept.submitted_by_id is None
    assert kept.description == f"3单元楼道灯坏了，晚上很黑，请联系我{MASKED}"
    async with h.app.sessions() as db:
        assert await db.get(Person, RESIDENT) is None
        actions = (await db.execute(select(CaseEvent.action, CaseEvent.actor_id)
                                    .where(CaseEvent.case_id == case.id)
                                    .order_by(CaseEvent.id))).all()
    assert actions == [("report", None), ("confirm", HEAD), ("accept", LEADER),
                       ("resolve", LEADER), ("rate", None)]
    await assert_gone(h, RESIDENT, [NAME, html.escape(NAME), PHONE, PHONE2, "draft-photo-1"])

    # The ledger still reads: staff see the case, with nobody named.
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER).text
    assert "办理记录" in detail and MASKED in detail and NAME not in detail


async def test_erase_of_someone_who_reported_on_behalf_of_a_resident(h: Harness) -> None:
    """A unit head removed from the registry: the resident's case stays the resident's."""
    resident_msg = await h.say(UNIT_CHAT, STRANGER, f"单元门坏了 {PHONE}", name="邻居")
    await h.say(UNIT_CHAT, UNIT_HEAD, "/report", reply_to=resident_msg)
    case = (await h.cases())[-1]
    assert (case.reporter_id, case.submitted_by_id) == (STRANGER, UNIT_HEAD)
    text = SAMPLE.read_text("utf-8")
    head = "                    head: {id: 940131, name: 单元长丁}\n"
    assert text.count(head) == 1
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text.replace(head, "")), h.clock)
        erased = await erase_person(db, UNIT_HEAD)
    assert erased.cases == 1
    kept = await h.case(case.id)
    assert kept.reporter_id == STRANGER and kept.submitted_by_id is None
    await assert_gone(h, UNIT_HEAD, ["单元长丁"])


async def test_erase_of_former_staff_removes_their_name_from_the_record(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "交楼栋长")  # the note names the head
    await h.press(HEAD, h.card(HEAD, case.id), "已完成")  # the leader's card names him too
    text = SAMPLE.read_text("utf-8")
    line = "                head: {id: 930103, name: 楼栋长丙}\n"
    async with h.app.sessions() as db:
        with pytest.raises(PrivacyError, match="still holds roles"):
            await erase_person(db, HEAD)
        await apply_registry(db, parse_registry(text.replace(line, "")), h.clock)
        await erase_person(db, HEAD)
    await assert_gone(h, HEAD, ["楼栋长丙"])
    assert await h.events(case.id) == ["report", "confirm", "assign", "done"]


async def test_erase_refuses_a_person_who_holds_a_role(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    async with h.app.sessions() as db:
        with pytest.raises(PrivacyError) as raised:
            await erase_person(db, MEMBER)
    message = str(raised.value)
    assert "\n" not in message
    assert "grid_member BSY-01" in message and "registry" in message
    async with h.app.sessions() as db:
        assert await db.get(Person, MEMBER) is not None


# --- the command ---------------------------------------------------------------------------


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridbot: error: "), err
    return lines[0]


@pytest.fixture
def told_story(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The story in the test database, which the `gridbot` command then opens."""
    isolate_env(monkeypatch, tmp_path)

    async def tell() -> str:
        h = await make_harness(tmp_path)
        await story(h)
        await h.app.close()
        return h.app.settings.database_url

    monkeypatch.setenv("GRIDBOT_DATABASE_URL", asyncio.run(tell()))
    return tmp_path


def test_cli_export_to_stdout_and_to_a_file(told_story: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "export", str(RESIDENT)]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["person"]["name"] == NAME and data["cases"][0]["description"] == REPORT
    target = told_story / "export.json"
    assert main(["privacy", "export", str(RESIDENT), "--out", str(target)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote everything held about Telegram user {RESIDENT} to {target}")
    assert json.loads(target.read_text("utf-8")) == {**data, "exported_at": json.loads(
        target.read_text("utf-8"))["exported_at"]}
    assert target.stat().st_mode & 0o077 == 0


def test_cli_erase(told_story: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "erase", str(RESIDENT)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"erased Telegram user {RESIDENT}: 1 cases")
    assert main(["privacy", "export", str(RESIDENT)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"nothing is held about Telegram user {RESIDENT}" in line


def test_cli_refusals_are_one_line(told_story: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "erase", str(LEADER)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "still holds roles in the registry (grid_leader BSY-01)" in line
    assert main(["privacy", "erase", "777"]) == 1
    assert "nothing is held about Telegram user 777" in one_error_line(capsys.readouterr().err)
    assert main(["privacy", "export", "abc"]) == 1
    assert "USER_ID must be a Telegram user id" in one_error_line(capsys.readouterr().err)
    assert main(["privacy", "export", str(RESIDENT), "--out",
                 str(told_story / "no" / "such" / "dir.json")]) == 1
    assert "cannot write" in one_error_line(capsys.readouterr().err)


# --- what groups see -----------------------------------------------------------------------


def group_texts(h: Harness) -> list[str]:
    return [s.text for s in h.api.sent if s.chat_id < 0 and s.text]


async def test_residents_groups_never_see_who_reported_nor_their_number(h: Harness) -> None:
    await story(h)
    residents = [s.text for s in h.api.sent if s.chat_id in (BUILDING_CHAT, UNIT_CHAT)]
    assert residents, "the ack, the resolution notice and the reporter's copy went there"
    assert any("已收到您的诉求" in t for t in residents)
    assert any("已办结" in t and MASKED in t for t in residents)
    for text in residents:
        assert NAME not in text and str(RESIDENT) not in text, text


async def test_no_phone_number_is_posted_to_any_group_unmasked(h: Harness) -> None:
    h.api.forbid(HEAD)  # his verify card goes to the grid work group
    h.api.forbid(RESIDENT)  # the resolution notice goes to their building group
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {REPORT}", name=NAME)
    case = (await h.cases())[-1]
    await press_as(h, HEAD, WORK_CHAT, "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, RESULT)
    await h.press(LEADER, h.last(LEADER), "提交办结")
    assert (await h.case(case.id)).status == "resolved"
    assert h.api.texts_to(WORK_CHAT) and len(h.api.texts_to(BUILDING_CHAT)) == 3
    leaks = sorted({"work group" if s.chat_id == WORK_CHAT else "building group"
                    for s in h.api.sent if s.chat_id < 0 and PHONE in s.text})
    assert leaks == [], leaks


async def test_no_phone_number_in_group_notices_when_the_reporter_is_reachable(
        h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, f"/report {REPORT}", name=NAME)
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, RESULT)
    await h.press(LEADER, h.last(LEADER), "提交办结")
    texts = [s.text for s in h.api.to(BUILDING_CHAT)]
    assert len(texts) == 2  # the ack and the resolution notice
    for text in texts:
        assert PHONE not in text and NAME not in text and str(RESIDENT) not in text, text
    assert MASKED in texts[-1]


# --- logs ----------------------------------------------------------------------------------


async def test_logs_at_info_and_above_carry_no_text_and_no_personal_data(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h.api.forbid(MEMBER)
    h.api.fail_next(BUILDING_CHAT, 400, "Bad Request: message is too long")
    await story(h)
    # The clock-driven part: a second case left to run overdue and escalate.
    await h.say(UNIT_CHAT, RESIDENT, f"/report 单元门禁坏了 {PHONE}", name=NAME)
    for _ in range(10):
        await h.advance(timedelta(hours=12))
    assert "auto_escalate" in await h.events((await h.cases())[-1].id)
    # A failure inside a handler, in the database: the error is logged, with no parameters.
    await refuse_inserts(h, "cases")
    await h.say(UNIT_CHAT, RESIDENT, f"/report 单元门禁坏了 {PHONE}", name=NAME)
    assert any(r.levelno >= logging.ERROR and r.exc_info for r in caplog.records)
    async with h.app.sessions() as db:
        await begin(db, h.app.ctx)
        people = {p.id: p.name for p in (await db.scalars(select(Person))).all()}
    needles = [REPORT, DRAFT, RESULT, PHONE, PHONE2, "楼道灯坏了", "单元门禁坏了",
               *people.values(), *map(str, people)]
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any(r.name == "bot.cases.sweep" for r in loud), "the sweep's INFO lines were captured"
    handler = logging.Formatter()
    for record in loud:
        text = record.getMessage()
        if record.exc_info:
            text += handler.formatException(record.exc_info)
        for needle in needles:
            assert needle not in text, (record.name, record.levelname, text[:300])


async def test_a_bind_question_waiting_for_a_former_leader_is_exported_and_erased(
        h: Harness) -> None:
    await h.say(BUILDING_CHAT, LEADER, "/bind BSY-01")  # asks to confirm, names both places
    text = SAMPLE.read_text("utf-8")
    line = "            leader: {id: 920001, name: 网格长甲}\n"
    assert line in text
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text.replace(line, "")), h.clock)
        data = await export_person(db, LEADER, h.clock.now())
        assert [b["chat_id"] for b in data["bind_requests"]] == [BUILDING_CHAT]
        assert data["bind_requests"][0]["place"] == "BSY-01"
        await erase_person(db, LEADER)
        with pytest.raises(PrivacyError, match="nothing is held"):
            await export_person(db, LEADER, h.clock.now())


async def test_erase_of_a_follower_with_a_question_waiting(h: Harness) -> None:
    """是同一问题: the cases they follow keep the count right without them, and a report
    held back for their answer goes; the export shows both first."""
    from storage.models import CaseFollower, DuplicateOffer

    await h.say(BUILDING_CHAT, RESIDENT, "/report 3单元楼道灯坏了，晚上很黑")
    [case] = await h.cases()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.say(BUILDING_CHAT, STRANGER, f"/report 3单元楼道的灯不亮，电话{PHONE}")
    await h.press(STRANGER, h.last(BUILDING_CHAT), "是同一问题")
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼下垃圾好几天没人清运")
    await h.say(BUILDING_CHAT, STRANGER, "/report 垃圾没人清运")  # a question not answered yet
    assert (await h.case(case.id)).followers == 1
    async with h.app.sessions() as db:
        data = await export_person(db, STRANGER, h.clock.now())
    assert [f["case_id"] for f in data["follows"]] == [case.id]
    assert [o["status"] for o in data["duplicate_offers"]] == ["joined", "pending"]
    assert PHONE in json.dumps(data, ensure_ascii=False)

    async with h.app.sessions() as db:
        await erase_person(db, STRANGER)
        assert (await db.scalars(select(CaseFollower))).all() == []
        assert (await db.scalars(select(DuplicateOffer))).all() == []
    assert (await h.case(case.id)).followers == 0
    await h.advance(timedelta(minutes=10))  # the held report is not filed after all
    assert len(await h.cases()) == 2
    await assert_gone(h, STRANGER, [PHONE])
