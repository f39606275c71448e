"""The registry: parsing with line-numbered problems, and idempotent, non-destructive applying."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases.registry_edit import apply_registry
from bot.cli import main
from bot.clock import ManualClock
from bot.org.directory import directory
from bot.org.durations import parse_duration
from bot.org.policy import Policy
from bot.org.registry import ApplyReport, RegistryError, parse_registry
from storage.db import create_schema, make_engine, make_sessionmaker
from storage.models import (
    Case,
    Category,
    Department,
    DepartmentMember,
    Node,
    OrgSettings,
    Person,
    Role,
)
from tests.e2e import query
from tests.harness import (
    HEAD5,
    LEADER,
    MARKET,
    MORNING,
    POLICE,
    POLICE_CHAT,
    PROPERTY,
    SAMPLE,
    fresh_database,
)

SAMPLE_TEXT = SAMPLE.read_text("utf-8")
# What a reload must leave as it was. Roles are compared without their ids: the registry
# replaces them by design and nothing refers to one; only SQLite, reusing the ids of deleted
# rows, would give them the same ids again.
TABLES = {t: f"SELECT * FROM {t} ORDER BY 1" for t in ("nodes", "people", "categories",
                                                        "org_settings")}
TABLES["roles"] = "SELECT person_id, role, node_id FROM roles ORDER BY 1, 2, 3"
TABLES["departments"] = "SELECT * FROM departments ORDER BY 1"
TABLES["department_members"] = ("SELECT department_id, person_id FROM department_members "
                                "ORDER BY 1, 2")
# Every load moves the registry number on, changed or not: workers then read the registry
# again once, which is cheap; everything else must stay as it was.
TABLES["org_settings"] = ("SELECT id, timezone, locale, verify_within, remind_at, overdue_repeat, "
                          "escalate_after, rating_within, quiet_start, quiet_end, "
                          "max_extensions, extension_answer_within, check_all, check_within, "
                          "whistle_ack_within FROM org_settings")


def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"the sample no longer contains {old!r}"
    return text.replace(old, new, 1)


@pytest.fixture
async def database(tmp_path: Path) -> str:
    return await fresh_database(tmp_path, "r.db")


@pytest.fixture
async def sessions(database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database)
    await create_schema(engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MORNING)


async def load(sessions: async_sessionmaker[AsyncSession], text: str,
               clock: ManualClock) -> ApplyReport:
    async with sessions() as db:
        return await apply_registry(db, parse_registry(text), clock)


async def counts(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as db:
        return {
            model.__tablename__: int(await db.scalar(select(func.count()).select_from(model))
                                     or 0)
            for model in (Node, Person, Role, Category, Department, DepartmentMember)
        }


async def snapshot(database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the registry's tables, read past the ORM."""
    return {t: await query(database, sql) for t, sql in TABLES.items()}


async def node(sessions: async_sessionmaker[AsyncSession], code: str) -> Node | None:
    async with sessions() as db:
        return await db.scalar(select(Node).where(Node.code == code))


async def roles_of(sessions: async_sessionmaker[AsyncSession],
                   person_id: int) -> set[tuple[str, str]]:
    async with sessions() as db:
        rows = await db.execute(select(Role.role, Node.code).join(Node, Role.node_id == Node.id)
                                .where(Role.person_id == person_id))
        return {(r, c) for r, c in rows.all()}


# --- applying ------------------------------------------------------------------------------


async def test_sample_loads_with_expected_shape(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    report = await load(sessions, SAMPLE_TEXT, clock)
    # 1 street, 1 community, 2 grids, 3 buildings, 2 units.
    assert report.nodes == 9
    assert report.categories == 9
    assert report.departments == 3
    assert report.deactivated == []
    # 9 people with roles, and the 3 departments' contact people, who have none.
    assert report.people == 12
    assert await counts(sessions) == {"nodes": 9, "people": 12, "roles": 9, "categories": 9,
                                      "departments": 3, "department_members": 3}
    assert await roles_of(sessions, POLICE) == set()
    assert await roles_of(sessions, HEAD5) == {("building_head", "BSY-01-05")}
    unit = await node(sessions, "BSY-01-03/1")
    building = await node(sessions, "BSY-01-03")
    assert unit is not None and building is not None
    assert (unit.kind, unit.name, unit.parent_id) == ("unit", "1", building.id)


async def test_loading_twice_duplicates_nothing(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock, database: str) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    first = await counts(sessions)
    rows = await snapshot(database)
    clock.advance(timedelta(days=1))
    report = await load(sessions, SAMPLE_TEXT, clock)
    assert report.deactivated == []
    assert await counts(sessions) == first
    assert all(n > 0 for n in first.values())
    # Not only the counts: ids, people's created_at and everything else are unchanged too.
    assert await snapshot(database) == rows


async def test_edited_file_applies_changes(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    old = await node(sessions, "BSY-02-12")
    assert old is not None and old.active
    # A case on the building that is about to leave the file.
    async with sessions() as db:
        case = Case(status="open", category="other", building_id=old.id,
                    description="楼道堆物", reported_at=clock.now(),
                    deadline_at=clock.now() + timedelta(hours=72))
        db.add(case)
        await db.commit()
        case_id = case.id

    text = SAMPLE_TEXT
    text = edit(text, "name: 5号楼", "name: 五号楼")
    text = edit(text, "sla: 4h,", "sla: 2h,")
    text = edit(text, "                head: {id: 930105, name: 楼栋长己}\n", "")
    # BSY-02 loses its only building and a new grid with a new building follows it.
    text = edit(text, """            buildings:
              - code: BSY-02-12
                name: 12号楼
                chat: -1009200000212
""", """          - code: BSY-03
            name: 柏树郢第三网格
            leader: {id: 920021, name: 网格长辛}
            chat: -1009200000003
            buildings:
              - code: BSY-03-01
                name: 1号楼
                head: {id: 930301, name: 楼栋长壬}
""")
    clock.advance(timedelta(days=1))
    report = await load(sessions, text, clock)
    assert report.deactivated == ["BSY-02-12"]

    renamed = await node(sessions, "BSY-01-05")
    assert renamed is not None and renamed.name == "五号楼" and renamed.active
    async with sessions() as db:
        fire = await db.get(Category, "fire")
        assert fire is not None and fire.sla_seconds == 2 * 3600
        facility = await db.get(Category, "facility")
        assert facility is not None and facility.sla_seconds == 72 * 3600
        # Removed from the role, but still a person the bot knows.
        head5 = await db.get(Person, HEAD5)
        assert head5 is not None and head5.name == "楼栋长己"
        assert await db.get(Person, 930301) is not None
    assert await roles_of(sessions, HEAD5) == set()
    assert await roles_of(sessions, 920021) == {("grid_leader", "BSY-03")}
    assert await roles_of(sessions, 930301) == {("building_head", "BSY-03-01")}

    grid = await node(sessions, "BSY-03")
    building = await node(sessions, "BSY-03-01")
    community = await node(sessions, "BSY")
    assert grid is not None and building is not None and community is not None
    assert (grid.kind, grid.parent_id, grid.chat_id) == ("grid", community.id, -1009200000003)
    assert (building.kind, building.parent_id, building.active) == ("building", grid.id, True)

    gone = await node(sessions, "BSY-02-12")
    assert gone is not None and gone.id == old.id and gone.active is False
    async with sessions() as db:
        kept = await db.get(Case, case_id)
        assert kept is not None and kept.building_id == old.id and kept.status == "open"

    # Putting the building back in the file brings the same row back to life.
    await load(sessions, SAMPLE_TEXT, clock)
    back = await node(sessions, "BSY-02-12")
    assert back is not None and back.id == old.id and back.active is True
    assert await roles_of(sessions, HEAD5) == {("building_head", "BSY-01-05")}


async def test_category_left_out_is_deactivated_not_deleted(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    # welfare's entry: its keywords line and its name line.
    text = re.sub(r"  - \{code: welfare,.*\n.*sla: 3d\}\n", "", SAMPLE_TEXT)
    assert "welfare" not in text
    await load(sessions, text, clock)
    async with sessions() as db:
        welfare = await db.get(Category, "welfare")
        other = await db.get(Category, "other")
    assert welfare is not None and welfare.active is False
    assert other is not None and other.active is True


async def test_null_durations_and_quiet_hours_are_stored_as_none(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    async with sessions() as db:
        before = await db.get(OrgSettings, 1)
    assert before is not None
    assert (before.verify_within, before.overdue_repeat, before.escalate_after,
            before.rating_within) == (2 * 3600, 4 * 3600, 24 * 3600, 3 * 86400)
    assert (before.quiet_start, before.quiet_end) == ("22:00", "07:00")
    assert (before.timezone, before.locale, before.remind_at) == ("Asia/Shanghai", "zh_CN", 0.75)

    text = SAMPLE_TEXT
    for line in ("verify_within: 2h", "remind_at: 0.75", "overdue_repeat: 4h",
                 "escalate_after: 24h", "rating_within: 3d"):
        key = line.split(":")[0]
        text = edit(text, line, f"{key}: null")
    text = edit(text, 'quiet_hours: "22:00-07:00"', "quiet_hours: null")
    model = parse_registry(text)
    assert model.policy.verify_within is None and model.policy.quiet_hours is None
    async with sessions() as db:
        await apply_registry(db, model, clock)
    async with sessions() as db:
        after = await db.get(OrgSettings, 1)
    assert after is not None
    assert (after.verify_within, after.remind_at, after.overdue_repeat, after.escalate_after,
            after.rating_within, after.quiet_start, after.quiet_end) == (None,) * 7


# --- the handling workflow's keys (延期, 挂账, 核查, 吹哨报到) ------------------------------------


WORKFLOW_POLICY = ("max_extensions", "extension_answer_within", "check", "check_within",
                   "whistle_ack_within")


def without_workflow_keys(text: str) -> str:
    """The sample as registries were before the workflow keys: none of them is written."""
    lines = [line for line in text.splitlines(keepends=True)
             if line.strip().split(":")[0] not in WORKFLOW_POLICY]
    text = "".join(lines)
    text = edit(text, ", check: true}", "}")
    return text[:text.index("\n# Departments")] + "\n"


async def test_a_registry_without_the_workflow_keys_loads_with_their_defaults(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    text = without_workflow_keys(SAMPLE_TEXT)
    assert "departments" not in text and "max_extensions" not in text and "check" not in text
    model = parse_registry(text)
    assert model.departments == []
    assert (model.policy.max_extensions, model.policy.extension_answer_within,
            model.policy.check, model.policy.check_within,
            model.policy.whistle_ack_within) == (1, 86400, False, 86400, 1800)
    assert not any(c.check for c in model.categories)
    report = await load(sessions, text, clock)
    assert (report.people, report.departments) == (9, 0)
    async with sessions() as db:
        row = await db.get(OrgSettings, 1)
        assert row is not None
        assert (row.max_extensions, row.extension_answer_within, row.check_all,
                row.check_within, row.whistle_ack_within) == (1, 86400, False, 86400, 1800)
        policy = Policy.from_row(row)
        known = await directory(db)
    assert (policy.max_extensions, policy.extension_answer_within, policy.check_all,
            policy.check_within, policy.whistle_ack_within) == (
        1, timedelta(days=1), False, timedelta(days=1), timedelta(minutes=30))
    assert known.departments == {}
    assert not any(c.check_required for c in known.categories.values())


async def test_the_workflow_keys_are_stored_and_null_turns_a_timer_off(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    text = SAMPLE_TEXT
    text = edit(text, "max_extensions: 1 ", "max_extensions: 0 ")
    text = edit(text, "extension_answer_within: 1d", "extension_answer_within: null")
    text = edit(text, "check: false ", "check: true ")
    text = edit(text, "check_within: 1d", "check_within: 4h")
    text = edit(text, "whistle_ack_within: 30m", "whistle_ack_within: null")
    await load(sessions, text, clock)
    async with sessions() as db:
        row = await db.get(OrgSettings, 1)
        assert row is not None
        policy = Policy.from_row(row)
    assert (policy.max_extensions, policy.extension_answer_within, policy.check_all,
            policy.check_within, policy.whistle_ack_within) == (
        0, None, True, timedelta(hours=4), None)


async def test_a_changed_workflow_timer_retimes_open_cases(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.cases.registry_edit

    seen: list[bool] = []
    real = bot.cases.registry_edit.retime_open_cases

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["policy_changed"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(bot.cases.registry_edit, "retime_open_cases", spy)
    await load(sessions, SAMPLE_TEXT, clock)
    await load(sessions, SAMPLE_TEXT, clock)
    await load(sessions, edit(SAMPLE_TEXT, "whistle_ack_within: 30m", "whistle_ack_within: 1h"),
               clock)
    assert seen == [False, False, True]


async def test_category_check_is_stored_and_in_the_directory(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    async with sessions() as db:
        housing = await db.get(Category, "housing")
        facility = await db.get(Category, "facility")
        known = await directory(db)
    assert housing is not None and housing.check_required is True
    assert facility is not None and facility.check_required is False
    assert [c for c, info in known.categories.items() if info.check_required] == ["housing"]
    # Taken out of the file, the check goes with it.
    await load(sessions, edit(SAMPLE_TEXT, ", check: true}", "}"), clock)
    async with sessions() as db:
        housing = await db.get(Category, "housing")
    assert housing is not None and housing.check_required is False


async def test_departments_are_applied_and_in_the_directory(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    async with sessions() as db:
        known = await directory(db)
        police_person = await db.get(Person, POLICE)
    assert police_person is not None and police_person.name == "社区民警小李"
    assert list(known.departments) == ["police", "market", "property"]
    police = known.departments["police"]
    assert (police.name, police.chat_id, police.members) == (
        "莲花派出所", POLICE_CHAT, frozenset({POLICE}))
    assert known.departments["market"].members == frozenset({MARKET})
    assert known.departments["property"].chat_id is None
    assert known.department(police.id) is police
    assert [d.code for d in known.departments_of(PROPERTY)] == ["property"]
    assert known.departments_of(LEADER) == []


async def test_a_department_left_out_is_deactivated_and_its_people_removed(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    async with sessions() as db:
        police_id = (await directory(db)).departments["police"].id
    # The police leave the file; the market gets a second person, the leader, who also has
    # a role in a grid.
    text = edit(SAMPLE_TEXT, """  - code: police
    name: 莲花派出所
    people:
      - {id: 950001, name: 社区民警小李}
    chat: -1009500000950
""", "")
    text = edit(text, "      - {id: 950011, name: 市场监管员小王}\n",
                "      - {id: 950011, name: 市场监管员小王}\n"
                "      - {id: 920001, name: 网格长甲}\n")
    report = await load(sessions, text, clock)
    assert report.departments == 2
    async with sessions() as db:
        known = await directory(db)
        gone = await db.get(Department, police_id)
        still = await db.get(Person, POLICE)
    assert list(known.departments) == ["market", "property"]
    assert known.departments["market"].members == frozenset({MARKET, LEADER})
    # Kept for the whistles that name it, inactive and with nobody in it.
    assert gone is not None and gone.active is False
    dropped = known.department(police_id)
    assert dropped is not None and not dropped.active and dropped.members == frozenset()
    assert still is not None
    assert known.departments_of(POLICE) == []
    # Back in the file: the same row, active again.
    await load(sessions, SAMPLE_TEXT, clock)
    async with sessions() as db:
        known = await directory(db)
    assert known.departments["police"].id == police_id
    assert known.departments["police"].members == frozenset({POLICE})


# --- rejecting -----------------------------------------------------------------------------


def bad_registry() -> str:
    """The sample with six different mistakes in it."""
    text = SAMPLE_TEXT
    text = edit(text, "sla: 4h,", "sla: 4x,")  # categories[2] is fire
    text = edit(text, "{id: 920002, name: 网格员乙}", "{id: abc, name: 网格员乙}")
    text = edit(text, "- code: BSY-02-12", "- code: BSY-01-03")
    text = edit(text, "  - {code: other,     name: {zh_CN: 其他, en: Other},"
                      "                    sla: 72h}\n", "")
    text = edit(text, "timezone: Asia/Shanghai", "timezone: Mars/Olympus_Mons")
    text = edit(text, 'quiet_hours: "22:00-07:00"', 'quiet_hours: "25:00-07:00"')
    return text


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The number of the line where `needle` occurs for the nth time."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= nth, f"{needle!r} is not in the text {nth} times"
    return found[nth - 1]


def test_several_errors_are_all_reported_with_line_and_path() -> None:
    text = bad_registry()
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    problems = info.value.problems
    assert all(re.match(r"^line \d+: \S", p) for p in problems), problems
    expected = {
        "categories[2].sla": line_of(text, "sla: 4x"),
        "streets[0].communities[0].grids[0].members[0].id": line_of(text, "id: abc"),
        "streets[0].communities[0].grids[1].buildings[0].code":
            line_of(text, "- code: BSY-01-03", nth=2),
        "categories": line_of(text, "- {code: facility"),
        "timezone": line_of(text, "timezone: Mars"),
        "policy.quiet_hours": line_of(text, "quiet_hours:"),
    }
    for path, line in expected.items():
        matching = [p for p in problems if p.startswith(f"line {line}: {path}: ")]
        assert len(matching) == 1, (path, line, problems)
    assert len(problems) == len(expected), problems
    joined = "\n".join(problems)
    assert "'4x'" in joined
    assert "'BSY-01-03' is used twice" in joined
    assert "'other'" in joined
    assert "Mars/Olympus_Mons" in joined


async def test_rejected_file_changes_nothing(
        sessions: async_sessionmaker[AsyncSession], clock: ManualClock, database: str) -> None:
    await load(sessions, SAMPLE_TEXT, clock)
    before = await snapshot(database)
    with pytest.raises(RegistryError):
        await load(sessions, bad_registry(), clock)
    assert await snapshot(database) == before


def test_rejected_file_through_the_cli_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = asyncio.run(fresh_database(tmp_path, "cli.db"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", database)
    monkeypatch.delenv("GRIDBOT_LOCALE", raising=False)
    assert main(["registry", "load", str(SAMPLE)]) == 0
    before = asyncio.run(snapshot(database))
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_registry(), encoding="utf-8")
    capsys.readouterr()
    assert main(["registry", "load", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "registry rejected" in err and "categories[2].sla" in err
    assert asyncio.run(snapshot(database)) == before


@pytest.mark.parametrize("text, line", [
    ("timezone: Asia/Shanghai\npolicy: {verify_within: 2h\ncategories: []\n", 3),
    ("timezone: Asia/Shanghai\n  locale: en\n", 2),
    ("timezone: Asia/Shanghai\ncategories:\n  - code: other\n\tname: x\n", 4),
])
def test_invalid_yaml_is_one_problem_with_a_line(text: str, line: int) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"line {line}: not valid YAML"), info.value.problems


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_rejected(text: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert info.value.problems == ["line 1: the file is empty"]


def test_a_file_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry("- just\n- a list\n")
    assert len(info.value.problems) == 1 and "mapping" in info.value.problems[0]


def test_missing_sections_are_named() -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry("timezone: Asia/Shanghai\nlocale: en\n")
    joined = "\n".join(info.value.problems)
    for section in ("policy", "categories", "streets"):
        assert f": {section}: " in joined, joined


def test_cross_check_problems_alone() -> None:
    text = edit(SAMPLE_TEXT, "- code: BSY-02-12", "- code: BSY-01-03")
    text = edit(text, "chat: -1009200000212", "chat: -1009200000103")
    text = edit(text, "{id: 920011, name: 网格长庚}", "{id: 920001, name: 别名}")
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    joined = "\n".join(info.value.problems)
    assert len(info.value.problems) == 3, joined
    assert "code 'BSY-01-03' is used twice" in joined
    assert "chat -1009200000103 is bound to two places" in joined
    assert "person 920001 is named both '网格长甲' and '别名'" in joined


def test_department_cross_checks() -> None:
    text = SAMPLE_TEXT
    # Listed twice; a chat that is a building's; a person named otherwise than in the tree.
    text = edit(text, "  - code: market\n", "  - code: police\n")
    text = edit(text, "chat: -1009500000950", "chat: -1009200000103")
    text = edit(text, "{id: 950021, name: 物业客服小张}", "{id: 930103, name: 物业小张}")
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    problems = info.value.problems
    joined = "\n".join(problems)
    assert len(problems) == 3, joined
    assert (f"line {line_of(text, '- code: police', nth=2)}: departments[1].code: "
            "department 'police' is listed twice") in problems
    assert (f"line {line_of(text, 'chat: -1009200000103', nth=2)}: departments[0].chat: "
            "chat -1009200000103 is bound to two places") in problems
    assert (f"line {line_of(text, '物业小张')}: departments[2].people[0]: person 930103 is "
            "named both '楼栋长丙' and '物业小张'") in problems


@pytest.mark.parametrize("old, new, path", [
    ("      - {id: 950011, name: 市场监管员小王}\n", "      []\n", "departments[1].people"),
    ("chat: -1009500000950", "chat: 1009500000950", "departments[0].chat"),
    ("  - code: market\n", "  - code: 市场\n", "departments[1].code"),
    ("    name: 莲花派出所\n", "    name: ''\n", "departments[0].name"),
    ("max_extensions: 1 ", "max_extensions: -1 ", "policy.max_extensions"),
    ("max_extensions: 1 ", "max_extensions: 11 ", "policy.max_extensions"),
    ("check_within: 1d", "check_within: 1x", "policy.check_within"),
    ("whistle_ack_within: 30m", "whistle_ack_within: 30", "policy.whistle_ack_within"),
    ("extension_answer_within: 1d", "extension_answer_within: 0d",
     "policy.extension_answer_within"),
    ("check: false ", "check: maybe ", "policy.check"),
    ("  - code: police\n", "  - code: police\n    phone: 110\n", "departments[0].phone"),
])
def test_bad_workflow_keys_name_their_path(old: str, new: str, path: str) -> None:
    text = edit(SAMPLE_TEXT, old, new)
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert len(info.value.problems) == 1, info.value.problems
    assert f": {path}: " in info.value.problems[0], info.value.problems


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("45s", 45), ("30m", 1800), ("4h", 14400), ("3d", 259200), ("72h", 259200),
])
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0h", "4x", "h", "", "4", "-4h", "4.5h", "4 hours"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="45s, 30m, 4h or 3d"):
        parse_duration(text)


@pytest.mark.parametrize("value", ["0h", "h", "4", "4x"])
def test_bad_policy_duration_names_its_path(value: str) -> None:
    text = edit(SAMPLE_TEXT, "escalate_after: 24h", f"escalate_after: {value}")
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert info.value.problems[0].startswith(
        f"line {line_of(text, 'escalate_after:')}: policy.escalate_after: ")


def test_a_bare_number_is_not_a_duration() -> None:
    text = edit(SAMPLE_TEXT, "sla: 72h}", "sla: 72}")
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert len(info.value.problems) == 1
    assert "categories[0].sla: must be a duration string" in info.value.problems[0]



# --- the ledger and the month (issue 10) ---------------------------------------------------


@pytest.mark.parametrize("text, seconds, unit", [
    ("4h", 14400, ""), ("3d", 259200, ""), ("8wh", 28800, "wh"), ("2wd", 172800, "wd"),
])
def test_slas_in_clock_or_working_time(text: str, seconds: int, unit: str) -> None:
    model = parse_registry(edit(SAMPLE_TEXT, "sla: 72h}", f"sla: {text}}}"))
    assert (model.categories[0].sla, model.categories[0].sla_unit) == (seconds, unit)


CALENDAR = """
calendar:
  working_hours: ["14:00-17:30", "08:30-12:00"]
  weekend: [sat, sun]
  holidays: [2026-12-24, "2027-01-01..2027-01-03"]
  workdays: [2027-02-07]
  years: [2027]
assessment:
  weights: {on_time: 40, closed: 30}
"""


async def test_calendar_digest_time_and_weights_are_stored(tmp_path: Path) -> None:
    text = edit(SAMPLE_TEXT, "sla: 72h}", "sla: 2wd}") + CALENDAR
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await create_schema(engine)
    async with make_sessionmaker(engine)() as db:
        await apply_registry(db, parse_registry(text), ManualClock(MORNING))
        row = await db.get(OrgSettings, 1)
        assert row is not None and row.digest_at == "08:30"
        assert row.calendar == {
            "hours": [["08:30", "12:00"], ["14:00", "17:30"]], "weekend": [6, 7],
            "official": True, "holidays": ["2026-12-24", "2027-01-01", "2027-01-02",
                                           "2027-01-03"],
            "workdays": ["2027-02-07"], "years": [2027]}
        assert row.score_weights == {"on_time": 40, "closed": 30, "satisfied": 20,
                                     "rework": 10}
        first = (await directory(db)).active_categories()[0]
        assert (first.sla_seconds, first.sla_unit) == (172800, "wd")
        # A registry without the keys: the defaults, digest at 08:30.
        await apply_registry(db, parse_registry(SAMPLE_TEXT), ManualClock(MORNING))
        await db.refresh(row)
        assert (row.calendar, row.score_weights, row.digest_at) == (None, None, "08:30")
    await engine.dispose()


@pytest.mark.parametrize("extra, path, words", [
    ("calendar: {working_hours: ['12:00-08:00']}", "calendar.working_hours", "ends after"),
    ("calendar: {working_hours: ['08:00-12:00', '11:00-13:00']}", "calendar.working_hours",
     "overlap"),
    ("calendar: {weekend: [sat, sun, mon, tue, wed, thu, fri]}", "calendar.weekend",
     "working day"),
    ("calendar: {weekend: [holiday]}", "calendar.weekend", "not a weekday"),
    ("calendar: {holidays: [2027-13-01]}", "calendar.holidays", "not a date"),
    ("calendar: {holidays: ['2027-01-03..2027-01-01']}", "calendar.holidays", "forwards"),
    ("calendar: {holidays: [2027-01-01], workdays: [2027-01-01]}", "calendar",
     "both a holiday and a workday"),
    ("assessment: {weights: {on_time: 200}}", "assessment.weights.on_time", "less than"),
    ("policy_x: 1", "policy_x", "Extra inputs"),
])
def test_bad_calendar_and_weights_name_their_path(extra: str, path: str, words: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(SAMPLE_TEXT + "\n" + extra + "\n")
    assert len(info.value.problems) == 1, info.value.problems
    assert f": {path}: " in info.value.problems[0] and words in info.value.problems[0], \
        info.value.problems


@pytest.mark.parametrize("value, stored", [("07:45", "07:45"), ("'07:45'", "07:45"),
                                           ("null", None)])
def test_digest_time(value: str, stored: str | None) -> None:
    text = edit(SAMPLE_TEXT, "  quiet_hours:", f"  digest_at: {value}\n  quiet_hours:")
    assert parse_registry(text).policy.digest_at == stored


def test_a_bad_digest_time_names_its_path() -> None:
    text = edit(SAMPLE_TEXT, "  quiet_hours:", "  digest_at: '25:00'\n  quiet_hours:")
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    assert ": policy.digest_at: must be a local time like 08:30" in info.value.problems[0]
