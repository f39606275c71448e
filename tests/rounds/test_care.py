"""走访 (issue 22, point 2): the care roster loaded from Excel or CSV, /visit through the real
Dispatcher, due and overdue visits on the grid staff's reminder lists and in the digest,
privacy (never a group, never anyone outside the grid's staff and supervisors), the privacy
export and erase, and the CLI."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import select, update

from bot.cases.status import CaseStatus
from bot.context import begin
from bot.ledger import digest
from bot.ops.privacy import erase_person, export_person
from bot.rounds import care
from bot.rounds.care_roster import RosterError, erase_household, import_roster, write_roster
from bot.telegram.fake import Sent
from storage.models import CareHousehold, CareVisit, Outbox, Reminder
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    STRANGER,
    STREET_SUP,
    UNIT_CHAT,
    WORK_CHAT,
    Harness,
)

HEADERS = ["楼栋", "单元", "门牌号", "姓名", "类别", "走访周期", "联系电话", "备注"]
ROWS: list[list[Any]] = [
    ["BSY-01-03", "1", 302, "张桂英", "独居老人", "每月", 13812345678, "腿脚不便，耳背"],
    ["3号楼", "2单元", "101室", "李建国", "残疾人", "3m", None, None],
    ["BSY-01-05", None, "501", "王小明", "留守儿童", "2w", "0551-62001234", "爷爷照看"],
    ["BSY-02-12", "", "1201", "赵秀兰", "困难家庭", "", None, ""],
]
NAMES = ("张桂英", "李建国", "王小明", "赵秀兰")
PHONE_DIGITS = ("13812345678", "62001234")
# Who may ever read a line about BSY-01's households: its staff and their supervisors.
BSY01_ALLOWED = {LEADER, MEMBER, COMMUNITY_SUP, STREET_SUP}


def xlsx(path: Path, rows: list[list[Any]], headers: list[str] = HEADERS,
         title: str | None = "柏树郢社区重点关爱对象走访名单") -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    if title:
        sheet.append([title])
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


async def load(h: Harness, path: Path) -> Any:
    async with h.app.sessions() as db:
        return await import_roster(db, path, h.clock.now())


async def households(h: Harness, *, active: bool | None = True) -> list[CareHousehold]:
    async with h.app.sessions() as db:
        q = select(CareHousehold).order_by(CareHousehold.id)
        if active is not None:
            q = q.where(CareHousehold.active.is_(active))
        return list((await db.scalars(q)).all())


async def household(h: Harness, door: str) -> CareHousehold:
    return next(x for x in await households(h, active=None) if x.door == door)


async def set_due(h: Harness, door: str, delta: timedelta) -> None:
    async with h.app.sessions() as db:
        await db.execute(update(CareHousehold).where(CareHousehold.door == door)
                         .values(next_due_at=h.clock.now() + delta))
        await db.commit()


def care_messages(h: Harness) -> list[Sent]:
    return [s for s in h.api.sent if any(n in (s.text or "") for n in NAMES)
            or any(p in (s.text or "") for p in PHONE_DIGITS)
            or any(str(b.get("callback_data", "")).startswith("cv:")
                   for r in s.buttons for b in r)]


def _button(h: Harness, who: int, part: str) -> tuple[Sent, str]:
    """The latest message to `who` with a /visit button whose label has `part` (a reminder
    list may have come after it)."""
    for sent in reversed(h.api.to(who)):
        for label in sent.labels:
            if part in label and sent.button_data(label).startswith("cv:"):
                return sent, label
    raise AssertionError(f"no /visit button with {part!r} sent to {who}")


async def visit(h: Harness, who: int, building: str, household_label: str, note: str, *,
                need: bool = False, photo: str | None = None,
                location: tuple[float, float] | None = None) -> None:
    """/visit, the building, the household, the note (a photo, a location), 提交."""
    await h.private(who, "/visit")
    await h.press(who, *_button(h, who, building))
    await h.press(who, *_button(h, who, household_label))
    if location is not None:
        await h.private(who, location=location)
    if photo is not None:
        await h.private(who, photo=photo)
    await h.private(who, note)
    if need:
        await h.press(who, h.last(who), "发现困难")
    await h.press(who, h.last(who), "提交")


# --- the roster -----------------------------------------------------------------------------


async def test_import_reads_a_district_roster(h: Harness, tmp_path: Path) -> None:
    done = await load(h, xlsx(tmp_path / "名单.xlsx", ROWS))
    assert (done.added, done.updated, done.deactivated) == (4, 0, [])
    rows = await households(h)
    by_door = {r.door: r for r in rows}
    assert set(by_door) == {"302", "101", "501", "1201"}
    first = by_door["302"]
    assert (first.unit, first.names, first.kind, first.interval, first.phone) == (
        "1", "张桂英", "elderly_alone", "1m", "13812345678")
    # A building by its unique name, 2单元 and 101室 as written; the kind's own interval.
    assert (by_door["101"].unit, by_door["101"].kind, by_door["101"].interval) == (
        "2", "disabled", "3m")
    assert by_door["1201"].interval == "1m"  # 困难家庭's default
    assert by_door["501"].interval == "2w"
    # Never visited: due one interval after the load (a calendar month: 11-23 → 12-23).
    assert first.last_visit_at is None
    assert first.next_due_at == h.clock.now() + timedelta(days=30)


async def test_a_wrong_cell_names_its_row_and_column_and_nothing_loads(
        h: Harness, tmp_path: Path) -> None:
    bad = [*ROWS,
           ["BSY-09-99", "1", "1", "某某", "独居老人", "1m", None, None],
           ["BSY-01-03", "1", "303", "某某", "孤老", "1m", None, None],
           ["BSY-01-03", "1", "304", "某某", "独居老人", "每隔几天", None, None],
           ["BSY-01-03", "1", "305", "某某", "独居老人", "1m", "12345", None],
           ["BSY-01-03", "1", "302", "重复", "独居老人", "1m", None, None],
           ["BSY-01-03", "1", "", "", "独居老人", "1m", None, None]]
    with pytest.raises(RosterError) as err:
        await load(h, xlsx(tmp_path / "bad.xlsx", bad))
    problems = err.value.problems
    # Row 1 is the title, row 2 the headers: the data start on row 3, as Excel shows them.
    assert problems[0].startswith("row 7, column 楼栋: no building 'BSY-09-99'")
    assert problems[1].startswith("row 8, column 类别: '孤老'")
    assert problems[2].startswith("row 9, column 走访周期: '每隔几天'")
    assert problems[3].startswith("row 10, column 联系电话: '12345'")
    assert problems[4].startswith("row 11, column 门牌号:") and "row 3" in problems[4]
    assert any(p.startswith("row 12, column 门牌号: empty") for p in problems)
    assert any(p.startswith("row 12, column 姓名: empty") for p in problems)
    assert await households(h, active=None) == []


async def test_reimport_updates_and_makes_the_missing_inactive(
        h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    changed = [["BSY-01-03", "1", "302", "张桂英", "独居老人", "每周", None, "已装呼叫器"],
               ROWS[2], ROWS[3]]
    done = await load(h, xlsx(tmp_path / "b.xlsx", changed))
    assert (done.added, done.updated, done.unchanged) == (0, 1, 2)
    assert done.deactivated == ["BSY-01-03 2-101"]
    assert "made inactive" in done.summary(tmp_path / "b.xlsx")
    first = await household(h, "302")
    assert (first.interval, first.phone, first.notes) == ("7d", None, "已装呼叫器")
    assert first.next_due_at == h.clock.now() + timedelta(days=7)
    assert not (await household(h, "101")).active
    # Listed again: active again.
    await load(h, xlsx(tmp_path / "c.xlsx", ROWS))
    assert (await household(h, "101")).active


async def test_csv_with_or_without_bom_and_english_headers(h: Harness, tmp_path: Path) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["building", "unit", "door", "names", "kind", "interval", "phone", "notes"])
    writer.writerow(["BSY-01-03", "1", "302", "张桂英", "elderly_alone", "1m", "", ""])
    path = tmp_path / "roster.csv"
    path.write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    assert (await load(h, path)).added == 1
    plain = tmp_path / "plain.csv"
    plain.write_text("楼栋,门牌号,姓名,类别\nBSY-01-05,501,王小明,留守儿童\n", "utf-8")
    assert (await load(h, plain)).added == 1
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("楼栋,门牌号,姓名,类别\n".encode("gbk"))
    with pytest.raises(RosterError, match="not UTF-8"):
        await load(h, gbk)


async def test_export_writes_what_reimports(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await visit(h, MEMBER, "3号楼", "1-302", "老人身体还好")
    out = tmp_path / "out.xlsx"
    async with h.app.sessions() as db:
        with out.open("wb") as f:
            assert await write_roster(db, f, "BSY-01") == 3
    book = load_workbook(out, read_only=True)
    roster = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
    visits = [list(r) for r in book.worksheets[1].iter_rows(values_only=True)]
    assert roster[0][:8] == HEADERS and roster[0][8:] == ["上次走访", "下次应访", "走访次数"]
    assert {r[3] for r in roster[1:]} == {"张桂英", "李建国", "王小明"}  # BSY-01 only
    first = next(r for r in roster[1:] if r[3] == "张桂英")
    assert first[4] == "独居老人" and first[10] == 1
    assert visits[1][3] == "张桂英" and visits[1][7] == "网格员乙"
    assert visits[1][8] == "老人身体还好"
    # The file loads again unchanged.
    done = await load(h, out)
    assert (done.added, done.updated, done.unchanged, done.deactivated) == (0, 0, 3, [])


async def test_the_registry_names_the_districts_own_kinds(h: Harness, tmp_path: Path) -> None:
    from bot.cases.registry_edit import apply_registry
    from bot.org.registry import parse_registry
    from tests.harness import SAMPLE

    text = SAMPLE.read_text("utf-8") + (
        "\ncare_kinds:\n  - {code: veteran, name: {zh_CN: 优抚对象, en: Veteran}, "
        "interval: 3m}\n")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)
    await load(h, xlsx(tmp_path / "k.xlsx", [["BSY-01-05", "", "502", "孙老", "优抚对象", "",
                                              None, None]]))
    row = await household(h, "502")
    assert (row.kind, row.interval) == ("veteran", "3m")


# --- /visit ---------------------------------------------------------------------------------


async def test_a_grid_member_records_a_visit(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await set_due(h, "302", -timedelta(days=1))  # overdue since yesterday
    await h.private(MEMBER, "/visit")
    buildings = h.last(MEMBER)
    # Their grid's buildings only (not 12号楼 of BSY-02), with counts and 🔴.
    assert buildings.labels == ["3号楼（2 户，🔴1）", "5号楼（1 户）", "取消"]
    await h.press(MEMBER, buildings, "3号楼（2 户，🔴1）")
    listing = h.last(MEMBER)
    assert listing.labels[:2] == ["🔴 1-302 张桂英·独居老人", "2-101 李建国·残疾人"]
    await h.press(MEMBER, listing, "🔴 1-302 张桂英·独居老人")
    card = h.last(MEMBER)
    assert "张桂英" in card.text and "138****5678" in card.text
    assert "13812345678" not in card.text and "腿脚不便" in card.text
    assert "走访周期：每月" in card.text
    await h.private(MEMBER, location=(31.8, 117.295))
    await h.private(MEMBER, photo="visit-photo-1")
    await h.private(MEMBER, "老人精神不错，冰箱空了，已联系社区送米面油")
    preview = h.last(MEMBER)
    assert "照片 1 张，已附位置" in preview.text
    await h.press(MEMBER, preview, "提交")
    assert "已记录 3号楼 1-302 的走访，下次应访 2026-12-23" in h.last(MEMBER).text
    async with h.app.sessions() as db:
        v = (await db.scalars(select(CareVisit))).one()
    assert (v.person_id, v.note, v.photos, v.lat, v.need_found, v.case_id) == (
        MEMBER, "老人精神不错，冰箱空了，已联系社区送米面油", ["visit-photo-1"], 31.8, False,
        None)
    assert v.due_at == h.clock.now() - timedelta(days=1)  # kept: visited a day late
    first = await household(h, "302")
    assert first.last_visit_at == h.clock.now()
    assert first.next_due_at == h.clock.now() + timedelta(days=30)  # 11-23 → 12-23
    assert await h.cases() == []


async def test_need_found_files_a_welfare_case_with_the_staff_note_only(
        h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await visit(h, MEMBER, "3号楼", "1-302", "家中暖气不热，老人行动不便需要帮助", need=True)
    [case] = await h.cases()
    assert (case.source, case.category, case.status, case.reporter_id) == (
        "visit", "welfare", CaseStatus.OPEN, MEMBER)
    assert case.description == "家中暖气不热，老人行动不便需要帮助"
    assert case.unit_id is not None  # 单元 1 is the registry's unit of 3号楼
    async with h.app.sessions() as db:
        v = (await db.scalars(select(CareVisit))).one()
    assert v.need_found and v.case_id == case.id
    assert f"#{case.id}" in h.last(MEMBER).text
    card = h.card(LEADER, case.id)
    assert "走访发现困难" in card.text


async def test_visit_refused_to_anyone_but_the_grids_staff(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    first = await household(h, "302")
    other = await household(h, "1201")
    for who in (STRANGER, RESIDENT, HEAD, COMMUNITY_SUP):
        await h.private(who, "/visit")
        assert "只有本网格的网格长、网格员" in h.last(who).text
        await h.press_data(who, f"cv:h:{first.id}")
        await h.press_data(who, f"cv:b:{first.building_id}")
    # Another grid's leader: not their household, not their building.
    await h.press_data(LEADER2, f"cv:h:{first.id}")
    await h.press_data(LEADER, f"cv:h:{other.id}")
    refused = [a for a in h.answers() if "只有本网格" in a]
    assert len(refused) == 10
    # In a group: only where to go, nothing of the roster.
    await h.say(WORK_CHAT, MEMBER, "/visit")
    assert "私聊" in h.last(WORK_CHAT).text and not h.last(WORK_CHAT).buttons
    await h.feed(h.updates.callback(MEMBER, f"cv:h:{first.id}", chat_id=WORK_CHAT))
    assert "私聊" in h.answers()[-1]
    assert all(s.chat_id in (MEMBER, LEADER) or "张桂英" not in s.text for s in h.api.sent)
    async with h.app.sessions() as db:
        assert (await db.scalars(select(CareVisit))).all() == []


# --- due and overdue ------------------------------------------------------------------------


async def _lists_to(h: Harness, person: int) -> list[Sent]:
    return [s for s in h.api.to(person) if "⏰" in (s.text or "") and "走访：" in s.text]


async def test_due_and_overdue_reach_the_grids_staff_once_each(
        h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    first = await household(h, "302")
    # 12-21 10:01: 302 and 1201 (a month) fall due on 12-23 10:00, within two days (101
    # every three months: not yet; 501 every two weeks: overdue by now).
    await h.advance(timedelta(days=28, minutes=1))
    lists = await _lists_to(h, MEMBER)
    assert len(lists) == 1
    text = lists[0].text
    assert "🟡 走访：3号楼 1-302｜独居老人｜12-23 前应访" in text
    assert "🔴 走访：5号楼 501｜留守儿童" in text
    assert "张桂英" not in text and "138" not in text
    assert lists[0].chat_id == MEMBER
    assert len(await _lists_to(h, LEADER)) == 1
    # BSY-02's leader: their own household only.
    [theirs] = await _lists_to(h, LEADER2)
    assert "12号楼 1201" in theirs.text and "3号楼" not in theirs.text
    # Its button opens the household, as /visit would.
    await h.press(MEMBER, lists[0], "🟡 1-302")
    assert "张桂英" in h.last(MEMBER).text and "请发送走访情况" in h.last(MEMBER).text
    # Once per due date: later sweeps owe nothing more for it.
    await h.advance(timedelta(hours=3))
    assert len(await _lists_to(h, MEMBER)) == 1
    # Overdue (12-23 10:00 passed), found at 12-24 01:02, in the quiet hours: owed at 07:00.
    h.clock.advance(timedelta(days=2, hours=12))
    await h.advance(timedelta(minutes=1))
    assert len(await _lists_to(h, MEMBER)) == 1
    async with h.app.sessions() as db:
        owed = (await db.scalars(select(Reminder).where(
            Reminder.household_id == first.id, Reminder.kind == care.OVERDUE_KIND))).all()
    assert owed and all(r.due_at == datetime(2026, 12, 23, 23, 0, tzinfo=UTC) for r in owed)
    assert {r.person_id for r in owed} == {LEADER, MEMBER}
    await h.advance(timedelta(hours=9))
    lists = await _lists_to(h, MEMBER)
    assert len(lists) == 2
    assert "🔴 走访：3号楼 1-302｜独居老人｜12-23 应访，已逾期" in lists[-1].text


async def test_a_visit_drops_the_reminder_not_yet_sent(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await set_due(h, "302", timedelta(days=1))
    # The list is written, then the household is visited before it goes out.
    h.clock.advance(timedelta(minutes=1))
    await h.app.sweep()
    from bot.org.roles import load_actor

    first = await household(h, "302")
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        await care.record_visit(tx, await load_actor(db, LEADER), first.id, "已上门看望")
    await h.deliver()
    assert [s for s in await _lists_to(h, MEMBER) if "1-302" in s.text] == []
    async with h.app.sessions() as db:
        rows = (await db.scalars(select(Reminder).where(Reminder.person_id == MEMBER))).all()
    assert rows and all(r.status == "dropped" and "visited since" in (r.reason or "")
                        for r in rows if r.kind == care.DUE_KIND)


async def test_digest_counts_due_and_overdue_per_grid(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await set_due(h, "302", timedelta(hours=5))  # due today
    await set_due(h, "101", -timedelta(days=3))  # overdue
    await set_due(h, "501", -timedelta(days=1))  # overdue
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        await digest.send_digest(tx, date(2026, 11, 23))
        await db.commit()
    await h.deliver()
    text = h.last(LEADER).text
    assert "走访到期 1 户，逾期 2 户" in text
    assert not any(n in text for n in NAMES)
    assert "走访到期" not in h.last(LEADER2).text


# --- privacy --------------------------------------------------------------------------------


async def test_no_household_data_reaches_a_group_or_anyone_outside_the_grid(
        h: Harness, tmp_path: Path) -> None:
    """Every path that speaks of a household: reminders (with the grid's work chat as the
    cases' fallback, and the staff unreachable privately), /visit, 发现困难's case and its
    card, the case resolved (its public notice), the digest."""
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    h.api.forbid(MEMBER)  # a list that cannot go privately must not fall back to a group
    await set_due(h, "302", timedelta(days=1))
    await set_due(h, "501", -timedelta(days=1))
    await h.advance(timedelta(minutes=11))
    await visit(h, LEADER, "3号楼", "1-302", "老人说最近头晕，需要社区医生上门", need=True,
                photo="p1")
    [case] = await h.cases()
    card = h.card(LEADER, case.id)
    await h.press(LEADER, card, "受理")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, "已联系社区医生上门")
    await h.press(LEADER, h.last(LEADER), "提交办结")
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        await digest.send_digest(tx, date(2026, 11, 23))
        await db.commit()
    await h.advance(timedelta(hours=2))
    assert care_messages(h), "the test must have sent something about the households"
    for sent in h.api.sent:
        text = sent.text or ""
        leaks = [n for n in (*NAMES, *PHONE_DIGITS, "腿脚不便") if n in text]
        if sent.chat_id < 0:
            assert not leaks, (sent.chat_id, text)
            assert "走访：" not in text
            assert not any(str(b.get("callback_data", "")).startswith("cv:")
                           for r in sent.buttons for b in r)
        elif leaks or "走访：" in text:
            assert sent.chat_id in BSY01_ALLOWED, (sent.chat_id, text)
    async with h.app.sessions() as db:
        rows = (await db.scalars(select(Outbox))).all()
    for row in rows:
        if row.chat_id < 0 or (row.fallback_chat_id is not None and "走访：" in row.text):
            assert not any(n in row.text for n in NAMES)
            assert "走访：" not in row.text
    # The case resolved: no 已办结 notice in the residents' groups of its building.
    assert (await h.case(case.id)).status == CaseStatus.RESOLVED
    assert not [s for s in h.api.sent if s.chat_id in (BUILDING_CHAT, UNIT_CHAT)
                and f"#{case.id}" in (s.text or "")]


async def test_privacy_export_and_erase_of_a_staff_member(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await visit(h, MEMBER, "3号楼", "1-302", "网格员乙上门，老人安好")
    async with h.app.sessions() as db:
        data = await export_person(db, MEMBER, h.clock.now())
    [v] = data["care_visits"]
    assert v["building"] == "BSY-01-03" and v["note"] == "网格员乙上门，老人安好"
    # Erase needs them out of the registry first; done here by hand as the operator would.
    from storage.models import Role

    async with h.app.sessions() as db:
        from sqlalchemy import delete
        await db.execute(delete(Role).where(Role.person_id == MEMBER))
        await db.commit()
    async with h.app.sessions() as db:
        await erase_person(db, MEMBER)
    async with h.app.sessions() as db:
        row = (await db.scalars(select(CareVisit))).one()
    assert row.person_id == 0 and "网格员乙" not in row.note
    assert (await household(h, "302")).last_visit_at is not None


async def test_erasing_a_household_removes_it_and_its_visits(h: Harness, tmp_path: Path) -> None:
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await set_due(h, "302", timedelta(days=1))
    await visit(h, MEMBER, "3号楼", "2-101", "一切正常")
    h.clock.advance(timedelta(minutes=11))
    await h.app.sweep()  # a list owed, not yet delivered
    async with h.app.sessions() as db:
        said = await erase_household(db, "BSY-01-03", "302", "1单元")
    assert "erased the household BSY-01-03 1-302" in said
    await h.deliver()
    assert not any("1-302" in (s.text or "") for s in h.api.sent)
    assert {x.door for x in await households(h, active=None)} == {"101", "501", "1201"}
    async with h.app.sessions() as db:
        assert len((await db.scalars(select(CareVisit))).all()) == 1
        with pytest.raises(RosterError):
            await erase_household(db, "BSY-01-03", "302", "1")


# --- the CLI --------------------------------------------------------------------------------


def test_cli_import_export_erase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from bot.cli import main
    from tests.harness import SAMPLE, fresh_database, isolate_env

    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", asyncio.run(fresh_database(tmp_path, "c.db")))
    assert main(["registry", "load", str(SAMPLE)]) == 0
    roster = xlsx(tmp_path / "r.xlsx", ROWS)
    assert main(["care", "import", str(roster)]) == 0
    assert "4 households of 3 buildings (4 new" in capsys.readouterr().out
    bad = xlsx(tmp_path / "bad.xlsx", [["BSY-01-03", "1", "9", "某", "外星人", "1m", None, None]])
    assert main(["care", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "nothing was loaded" in err and "row 3, column 类别" in err
    out = tmp_path / "out.xlsx"
    assert main(["care", "export", "-o", str(out), "--scope", "BSY-02"]) == 0
    assert "1 household of BSY-02" in capsys.readouterr().out
    assert main(["care", "erase", "--building", "BSY-02-12", "--door", "1201"]) == 0
    assert main(["care", "erase", "--building", "BSY-02-12", "--door", "1201"]) == 1


@pytest.mark.slow
async def test_two_thousand_households_import_in_seconds(h: Harness, tmp_path: Path) -> None:
    import time

    kinds = ["独居老人", "残疾人", "困难家庭", "留守儿童"]
    rows = [[("BSY-01-03", "BSY-01-05", "BSY-02-12")[i % 3], str(i % 6 + 1), str(1000 + i),
             f"居民{i}", kinds[i % 4], ("1m", "每周", "3m", "2w")[i % 4],
             f"138{i:08d}" if i % 5 == 0 else None, "备注" if i % 7 == 0 else None]
            for i in range(2000)]
    path = xlsx(tmp_path / "big.xlsx", rows)
    started = time.monotonic()
    done = await load(h, path)
    took = time.monotonic() - started
    assert done.added == 2000
    assert took < 10, f"{took:.1f} s"
    started = time.monotonic()
    again = await load(h, path)
    assert again.unchanged == 2000 and time.monotonic() - started < 10


async def test_a_list_with_a_household_line_never_falls_back_to_a_group(
        h: Harness, tmp_path: Path) -> None:
    """A case's reminder may go to the grid's work chat when its handler cannot be written
    to privately; a list that also carries a household's line may not (reminders.py)."""
    await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
    await h.say(BUILDING_CHAT, RESIDENT, "/report 3号楼楼道灯坏了")
    [case] = await h.cases()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    h.api.forbid(LEADER)
    # 54 h: the case (72 h) due soon; the household due within two days then.
    await set_due(h, "302", timedelta(days=3))
    await h.advance(timedelta(hours=54))
    async with h.app.sessions() as db:
        [row] = (await db.scalars(select(Outbox).where(
            Outbox.person_id == LEADER, Outbox.kind == "reminders"))).all()
    assert f"#{case.id}" in row.text and "走访：3号楼 1-302" in row.text
    assert row.fallback_chat_id is None and row.status == "held"
    assert not any("走访" in (s.text or "") for s in h.api.to(WORK_CHAT))


async def test_a_long_building_list_turns_pages(h: Harness, tmp_path: Path) -> None:
    rows = [["BSY-01-05", "", str(100 + i), f"住户{i}", "独居老人", "1m", None, None]
            for i in range(15)]
    await load(h, xlsx(tmp_path / "p.xlsx", rows))
    await h.private(LEADER, "/visit")
    await h.press(LEADER, h.last(LEADER), "5号楼（15 户）")
    first = h.last(LEADER)
    assert "第 1/2 页" in first.text and len(first.labels) == 12 + 1 + 2
    await h.press(LEADER, first, "▶")
    second = h.last(LEADER)
    assert "第 2/2 页" in second.text
    assert [x for x in second.labels if "住户" in x] == ["112 住户12·独居老人",
                                                       "113 住户13·独居老人",
                                                       "114 住户14·独居老人"]
    await h.press(LEADER, second, "← 楼栋")
    assert "请选择楼栋" in h.last(LEADER).text


def test_the_registry_refuses_a_care_kind_without_an_interval_it_can_read() -> None:
    from bot.org.registry import RegistryError, parse_registry
    from tests.harness import SAMPLE

    text = SAMPLE.read_text("utf-8") + (
        "\ncare_kinds:\n  - {code: veteran, name: {zh_CN: 优抚对象}, interval: monthly}\n")
    with pytest.raises(RegistryError) as err:
        parse_registry(text)
    assert any("interval" in p for p in err.value.problems)


async def test_visit_in_english(tmp_path: Path) -> None:
    from tests.harness import make_harness

    h = await make_harness(tmp_path, locale="en")
    try:
        await load(h, xlsx(tmp_path / "a.xlsx", ROWS))
        await h.private(MEMBER, "/visit")
        await h.press(MEMBER, h.last(MEMBER), "5号楼 (1 households)")
        await h.press(MEMBER, h.last(MEMBER), "501 王小明 · Left-behind child")
        card = h.last(MEMBER).text
        assert "Interval: every 2 weeks" in card and "0551-****1234" in card
        await h.private(MEMBER, "All well, grandfather looks after him")
        await h.press(MEMBER, h.last(MEMBER), "Submit")
        assert "Visit to 5号楼 501 recorded; the next is due 2026-12-07" in h.last(MEMBER).text
    finally:
        await h.app.close()
