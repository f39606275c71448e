"""Who may do what: every role × every command and case button, in scope and out of scope.

The tables below are the rules. Each cell is `in/out`:

- **in** — the case is in building BSY-01-03, unit 1 (grid BSY-01), reported by the resident;
  for `/report`, `/whoami` and `/bind` it is the BSY-01-03 group (or, for `/whoami`, private).
- **out** — the case is in building BSY-02-12 (grid BSY-02, leader 920011, no building head),
  reported by another resident; for the commands, the BSY-02-12 group.

`Y` allowed (and it takes effect), `N` refused ("您无权…" for buttons and `/bind`, "未找到"
for `/case`, not listed by `/cases` and `/my`), `H` permitted by the role, but the building has
no head to hand the task to (BSY-02-12), so nothing changes either.

Each button is pressed on a case in the status where it applies: confirm / reject on a case
waiting for verification, ack / done on a task handed to the building head, send back on an
escalated case, the ratings on a resolved case, the others on an open case at grid level.
BSY-02-12 has no building head, so its case never waits for verification nor is handed to a
head on its own: for those rows it is put in that status directly (the task names the head of
BSY-01-03, as after he moved on, to show that being named is not enough).

Every button is pressed as a callback built from the case as it is now (a forwarded or forged
button), so only the role and scope decide.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
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
from storage.models import Case, CaseEvent, Node
from tests.harness import (
    BUILDING12_CHAT,
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    RESIDENT2,
    SAMPLE,
    STRANGER,
    STREET_SUP,
    UNIT_CHAT,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
    Snapshot,
    make_harness,
)

ROLES: dict[str, int] = {
    "resident": RESIDENT,  # reported the in-scope case
    "unit_head": UNIT_HEAD,  # BSY-01-03/1
    "building_head": HEAD,  # BSY-01-03
    "grid_member": MEMBER,  # BSY-01
    "grid_leader": LEADER,  # BSY-01
    "community": COMMUNITY_SUP,  # BSY, over both grids
    "street": STREET_SUP,  # LHJD
    "stranger": STRANGER,  # no role, reported nothing
}

BUTTON_RULES = """
button           resident unit_head building_head grid_member grid_leader community street stranger
confirm          N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
reject           N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
category_verify  N/N      N/N       Y/N           Y/N         Y/N         Y/Y       Y/Y    N/N
category         N/N      N/N       N/N           Y/N         Y/N         Y/Y       Y/Y    N/N
accept           N/N      N/N       N/N           Y/N         Y/N         Y/Y       Y/Y    N/N
assign           N/N      N/N       N/N           Y/N         Y/N         Y/H       Y/H    N/N
ack              N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
done             N/N      N/N       Y/N           N/N         N/N         N/N       N/N    N/N
escalate         N/N      N/N       N/N           N/N         Y/N         Y/Y       Y/Y    N/N
send_back        N/N      N/N       N/N           N/N         N/N         Y/Y       Y/Y    N/N
resolve          N/N      N/N       N/N           Y/N         Y/N         Y/Y       Y/Y    N/N
rate_good        Y/N      N/N       N/N           N/N         N/N         N/N       N/N    N/N
rate_fair        Y/N      N/N       N/N           N/N         N/N         N/N       N/N    N/N
rate_bad         Y/N      N/N       N/N           N/N         N/N         N/N       N/N    N/N
merge            N/N      N/N       N/N           Y/N         Y/N         Y/Y       Y/Y    N/N
split            N/N      N/N       N/N           Y/N         Y/N         Y/Y       Y/Y    N/N
"""

COMMAND_RULES = """
command  resident unit_head building_head grid_member grid_leader community street stranger
report   Y/Y      Y/Y       Y/Y           Y/Y         Y/Y         Y/Y       Y/Y    Y/Y
bind     N/N      N/N       N/N           N/N         Y/N         Y/Y       Y/Y    N/N
cases    N/N      Y/N       Y/N           Y/N         Y/N         Y/Y       Y/Y    N/N
case     Y/N      Y/N       Y/N           Y/N         Y/N         Y/Y       Y/Y    N/N
my       Y/N      N/N       N/N           N/N         N/N         N/N       N/N    N/N
whoami   Y/Y      Y/Y       Y/Y           Y/Y         Y/Y         Y/Y       Y/Y    Y/Y
"""


def parse_rules(table: str) -> dict[tuple[str, str, str], str]:
    """{(row, role, "in" | "out"): "Y" | "N" | "H"} from one of the tables above."""
    lines = [line.split() for line in table.strip().splitlines()]
    header, rows = lines[0][1:], lines[1:]
    assert header == list(ROLES), header
    cells: dict[tuple[str, str, str], str] = {}
    for name, *values in rows:
        assert len(values) == len(ROLES), name
        for role, value in zip(header, values, strict=True):
            inside, outside = value.split("/")
            cells[(name, role, "in")] = inside
            cells[(name, role, "out")] = outside
    return cells


BUTTONS = parse_rules(BUTTON_RULES)
COMMANDS = parse_rules(COMMAND_RULES)


# --- the two cases, in the status each button needs ----------------------------------------


@dataclass(frozen=True)
class Button:
    scenario: str  # the status the cases are put in first
    action: Action
    arg: str = ""
    answer: str | None = None  # text for the prompt the button opens
    done: Callable[[Case], bool] = lambda case: False


BUTTON_SPECS: dict[str, Button] = {
    "confirm": Button("verifying", Action.CONFIRM, done=lambda c: c.status == "open"),
    "reject": Button("verifying", Action.REJECT, answer="现场查看没有这个问题",
                     done=lambda c: c.status == "rejected"),
    "category_verify": Button("verifying", Action.CATEGORY, "dispute",
                              done=lambda c: c.category == "dispute"),
    "category": Button("open", Action.CATEGORY, "dispute",
                       done=lambda c: c.category == "dispute"),
    "accept": Button("open", Action.ACCEPT, done=lambda c: c.status == "accepted"),
    "assign": Button("open", Action.ASSIGN, done=lambda c: c.status == "assigned"),
    "ack": Button("assigned", Action.ACK, done=lambda c: c.assignee_ack_at is not None),
    "done": Button("assigned", Action.DONE,
                   done=lambda c: c.status == "accepted" and c.assignee_id is None),
    "escalate": Button("open", Action.ESCALATE, answer="需要社区协调物业",
                       done=lambda c: c.level == "community"),
    "send_back": Button("escalated", Action.SEND_BACK, answer="请网格先行处置",
                        done=lambda c: c.level == "grid"),
    "resolve": Button("open", Action.RESOLVE, answer="已处理完毕",
                      done=lambda c: c.status == "resolved"),
    "rate_good": Button("resolved", Action.RATE, "good",
                        done=lambda c: c.status == "closed" and c.rating == "good"),
    "rate_fair": Button("resolved", Action.RATE, "fair",
                        done=lambda c: c.status == "closed" and c.rating == "fair"),
    "rate_bad": Button("resolved", Action.RATE, "bad", answer="灯还是不亮",
                       done=lambda c: c.status == "open" and c.rating == "bad"),
    # 合并 / 拆分 open a picker (tests/cases/test_merge.py follows them through): allowed, the
    # picker is shown and nothing has changed yet.
    "merge": Button("open", Action.MERGE, done=lambda c: c.status == "open"),
    "split": Button("open", Action.SPLIT, done=lambda c: c.status == "open"),
}
assert {name for name, _, _ in BUTTONS} == set(BUTTON_SPECS)

INSIDE, OUTSIDE = 1, 2  # case ids: the first case reported, then the second


async def _build(h: Harness, scenario: str) -> None:
    """Report the two cases and move them, through the domain, to `scenario`."""
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        b03, u1, b12 = [await node_by_code(db, c) for c in ("BSY-01-03", "BSY-01-03/1",
                                                                  "BSY-02-12")]
        assert b03 is not None and u1 is not None and b12 is not None
        await ensure_person(db, RESIDENT, "居民甲", tx.now)
        await ensure_person(db, RESIDENT2, "居民乙", tx.now)
        inside = await cases.report(tx, cases.ReportInput(
            building_id=b03.id, unit_id=u1.id, reporter_id=RESIDENT, description="单元门禁坏了",
            source_chat_id=UNIT_CHAT, source_message_id=11))
        outside = await cases.report(tx, cases.ReportInput(
            building_id=b12.id, reporter_id=RESIDENT2, description="12号楼门口积水",
            source_chat_id=BUILDING12_CHAT, source_message_id=12))
        assert (inside.id, outside.id) == (INSIDE, OUTSIDE)
        assert (inside.status, outside.status) == ("verifying", "open")
        head, leader, leader2 = [await load_actor(db, p) for p in (HEAD, LEADER, LEADER2)]
        if scenario == "verifying":
            # BSY-02-12 has no head: its cases skip verification. Put it there all the same.
            outside.status, outside.verified = "verifying", "pending"
            outside.verify_due_at = tx.now + timedelta(hours=2)
            await db.commit()
        else:
            await cases.confirm(tx, head, inside.id, inside.rev)
        if scenario == "assigned":
            await cases.assign(tx, leader, inside.id, inside.rev)
            # A task on BSY-02-12 naming the head of BSY-01-03 (no head of its own).
            outside.status, outside.assignee_id, outside.accepted_by_id = "assigned", HEAD, LEADER2
            outside.rev += 1
            await db.commit()
        elif scenario == "escalated":
            await cases.escalate(tx, leader, inside.id, inside.rev, "需要社区协调")
            await cases.escalate(tx, leader2, outside.id, outside.rev, "需要社区协调")
        elif scenario == "resolved":
            await cases.resolve(tx, leader, inside.id, inside.rev, "已修好")
            await cases.resolve(tx, leader2, outside.id, outside.rev, "已清理积水")
    await h.deliver()


_SNAPSHOTS: dict[str, Snapshot] = {}


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("access-snapshots")


async def harness_in(scenario: str, tmp_path: Path, snapshots: Path) -> Harness:
    """A fresh harness on a copy of the database prepared for `scenario` (built once)."""
    if scenario not in _SNAPSHOTS:
        where = snapshots / scenario
        where.mkdir()
        h = await make_harness(where)
        if scenario != "none":
            await _build(h, scenario)
        await h.app.close()
        _SNAPSHOTS[scenario] = await Snapshot.take(scenario, where)
    await _SNAPSHOTS[scenario].restore(tmp_path)
    return await make_harness(tmp_path, load=False)


@pytest.fixture
async def run_in(tmp_path: Path, snapshots: Path
                 ) -> AsyncIterator[Callable[[str], Awaitable[Harness]]]:
    """Opens a harness on a prepared database; closed after the test."""
    opened: list[Harness] = []

    async def open_(scenario: str) -> Harness:
        h = await harness_in(scenario, tmp_path, snapshots)
        opened.append(h)
        return h

    yield open_
    for h in opened:
        await h.app.close()


async def state(h: Harness, case_id: int) -> tuple[object, ...]:
    case = await h.case(case_id)
    async with h.app.sessions() as db:
        events = await db.scalar(select(func.count()).select_from(CaseEvent)
                                 .where(CaseEvent.case_id == case_id))
    return (case.status, case.rev, case.level, case.category, case.assignee_id,
            case.assignee_ack_at, case.rating, case.verified, events)


def button_data(case: Case, action: Action, arg: str = "") -> str:
    return CaseButton(action, case.id, case.rev, arg).pack()


# --- buttons -------------------------------------------------------------------------------


@pytest.mark.parametrize(("button", "role", "scope"), sorted(BUTTONS))
async def test_button(button: str, role: str, scope: str,
                      run_in: Callable[[str], Awaitable[Harness]]) -> None:
    expected = BUTTONS[(button, role, scope)]
    spec = BUTTON_SPECS[button]
    user = ROLES[role]
    h = await run_in(spec.scenario)
    case_id = INSIDE if scope == "in" else OUTSIDE
    case = await h.case(case_id)
    before = await state(h, case_id)
    await h.press_data(user, button_data(case, spec.action,
                                         "" if spec.action == Action.CATEGORY else spec.arg))
    answer = h.answers()[-1]
    if expected == "N":
        assert "无权" in answer, answer
        if spec.action == Action.CATEGORY:
            # Nor does a forged category choice get through.
            await h.press_data(user, button_data(case, Action.SET_CATEGORY, spec.arg))
            assert "无权" in h.answers()[-1]
        assert h.texts(user) == [], "no prompt follows a refusal"
        assert await state(h, case_id) == before
        return
    if expected == "H":
        assert "未设楼栋长" in answer, answer
        assert await state(h, case_id) == before
        return
    assert expected == "Y"
    assert "无权" not in answer and "失效" not in answer, answer
    if spec.action == Action.CATEGORY:
        await h.press_data(user, button_data(case, Action.SET_CATEGORY, spec.arg))
    elif spec.answer is not None:
        await h.private(user, spec.answer)
        if spec.action == Action.RESOLVE:
            await h.press(user, h.last(user), "提交办结")
    after = await h.case(case_id)
    assert spec.done(after), (after.status, after.level, after.category, after.rating)
    if spec.action in (Action.MERGE, Action.SPLIT):
        asked = h.last(user)
        assert asked.buttons and f"#{case_id}" in asked.text, asked.text


# --- commands ------------------------------------------------------------------------------


def lists(text: str, case_id: int) -> bool:
    return re.search(rf"#{case_id}(?!\d)", text) is not None


@pytest.mark.parametrize(("command", "role", "scope"), sorted(COMMANDS))
async def test_command(command: str, role: str, scope: str,
                       run_in: Callable[[str], Awaitable[Harness]]) -> None:
    expected = COMMANDS[(command, role, scope)] == "Y"
    user = ROLES[role]
    h = await run_in("open")
    case_id = INSIDE if scope == "in" else OUTSIDE
    group = BUILDING_CHAT if scope == "in" else BUILDING12_CHAT
    if command == "report":
        count = len(await h.cases())
        await h.say(group, user, "/report 楼道里堆满了杂物")
        made = await h.cases()
        assert (len(made) == count + 1) is expected
        if expected:
            assert made[-1].reporter_id == user
    elif command == "bind":
        code = "BSY-01-03" if scope == "in" else "BSY-02-12"
        await h.say(-100777, user, f"/bind {code}")
        reply = h.last(-100777).text
        if "确认改绑" in h.last(-100777).labels:
            # The place has a group of its own: moving it here takes the author's confirmation.
            await h.press(user, h.last(-100777), "确认改绑")
            reply = h.last(-100777).text
        async with h.app.sessions() as db:
            node = await node_by_code(db, code)
            assert node is not None
        assert (node.chat_id == -100777) is expected, reply
        assert ("已绑定" in reply) is expected and ("无权" in reply) is not expected
    elif command == "cases":
        await h.private(user, "/cases")
        text = h.last(user).text
        assert lists(text, case_id) is expected, text
        if role in ("resident", "stranger"):
            assert "工作人员" in text
    elif command == "case":
        await h.private(user, f"/case {case_id}")
        text = h.last(user).text
        assert ("未找到" not in text and lists(text, case_id)) is expected, text
    elif command == "my":
        await h.private(user, "/my")
        assert lists(h.last(user).text, case_id) is expected
    elif command == "whoami":
        chat = user if scope == "in" else BUILDING12_CHAT
        await h.say(chat, user, "/whoami")
        text = h.last(chat).text
        assert expected and f"ID {user}" in text
        held = role not in ("resident", "stranger")
        assert ("您是居民" in text) is not held
    else:  # pragma: no cover
        raise AssertionError(command)


async def test_report_in_a_work_chat_or_unbound_group_is_refused_for_everyone(
        run_in: Callable[[str], Awaitable[Harness]]) -> None:
    h = await run_in("none")
    for user in ROLES.values():
        await h.say(WORK_CHAT, user, "/report 楼道灯坏了")
        assert "网格工作群" in h.last(WORK_CHAT).text
        await h.say(-100999, user, "/report 楼道灯坏了")
        assert "尚未绑定" in h.last(-100999).text
    assert await h.cases() == []


# --- scope follows the registry at the time of the action ----------------------------------


def swapped_leaders() -> str:
    """The sample registry with the leaders of BSY-01 (920001) and BSY-02 (920011) swapped."""
    text = SAMPLE.read_text("utf-8")
    one, two = "leader: {id: 920001, name: 网格长甲}", "leader: {id: 920011, name: 网格长庚}"
    assert text.count(one) == 1 and text.count(two) == 1
    return text.replace(one, "@@").replace(two, one).replace("@@", two)


async def reload(h: Harness, text: str) -> None:
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


async def test_scope_follows_the_registry_at_the_time_of_the_action(h: Harness) -> None:
    await h.say(UNIT_CHAT, RESIDENT, "/report 单元门禁坏了")
    mine = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, mine.id), "✅ 属实")
    old_card = h.card(LEADER, mine.id)
    await h.say(BUILDING12_CHAT, RESIDENT2, "/report 12号楼门口积水")
    theirs = (await h.cases())[-1]
    assert h.card(LEADER2, theirs.id)

    await reload(h, swapped_leaders())  # 920001 now leads BSY-02, 920011 leads BSY-01

    before = await state(h, mine.id)
    for label in ("受理", "交楼栋长", "办结", "上报", "改类别"):
        await h.press(LEADER, old_card, label)
        assert "无权" in h.answers()[-1], label
    assert await state(h, mine.id) == before
    await h.private(LEADER, "/cases")
    listing = h.last(LEADER).text
    assert not lists(listing, mine.id) and lists(listing, theirs.id), listing
    await h.private(LEADER, f"/case {mine.id}")
    assert "未找到" in h.last(LEADER).text
    # The new grid's cases are his: /case shows its buttons, and they work.
    await h.private(LEADER, f"/case {theirs.id}")
    detail = h.last(LEADER)
    assert "办理记录" in detail.text and "受理" in detail.labels
    await h.press(LEADER, detail, "受理")
    taken = await h.case(theirs.id)
    assert taken.status == "accepted" and taken.accepted_by_id == LEADER
    # And the case he left is the new leader's.
    await h.press(LEADER2, old_card, "受理")
    assert (await h.case(mine.id)).status == "accepted"
    # And it is in his /cases.
    await h.private(LEADER2, "/cases")
    assert lists(h.last(LEADER2).text, mine.id)


async def test_a_task_follows_the_building_head_role(h: Harness) -> None:
    """A head who is no longer head of the building cannot report the task received or done."""
    await h.say(UNIT_CHAT, RESIDENT, "/report 单元门禁坏了")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "交楼栋长")
    task = h.card(HEAD, case.id)
    text = SAMPLE.read_text("utf-8")
    head = "                head: {id: 930103, name: 楼栋长丙}\n"
    assert text.count(head) == 1
    await reload(h, text.replace(head, ""))
    before = await state(h, case.id)
    for label in ("收到", "已完成"):
        await h.press(HEAD, task, label)
        assert "无权" in h.answers()[-1], label
    assert await state(h, case.id) == before
    # The leader still holds the case: he can resolve it himself.
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    assert "办理结果" in h.last(LEADER).text


async def test_every_role_in_the_tables_holds_the_roles_it_is_named_for(h: Harness) -> None:
    """The matrix is only as good as its people: check who they are in the sample registry."""
    expected = {
        "resident": set(), "stranger": set(),
        "unit_head": {("unit_head", "BSY-01-03/1")},
        "building_head": {("building_head", "BSY-01-03")},
        "grid_member": {("grid_member", "BSY-01")},
        "grid_leader": {("grid_leader", "BSY-01")},
        "community": {("community_supervisor", "BSY")},
        "street": {("street_supervisor", "LHJD")},
    }
    async with h.app.sessions() as db:
        for role, user in ROLES.items():
            actor = await load_actor(db, user)
            held = set()
            for name, node_id in actor.roles:
                node = await db.get(Node, node_id)
                assert node is not None
                held.add((name.value, node.code))
            assert held == expected[role], role
