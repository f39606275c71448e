"""Help that knows who is asking (issue 21, point 7): /help in a private chat says what this
person may do, by role, in a few short lines, and names only commands they may use; the
private chat's command menu follows the same roles, set once per change (`command_menus`),
not at each restart. In a group /help stays the how-to-report text, and a reply to it is a
report."""

from __future__ import annotations

import re
from pathlib import Path

from aiogram.methods import DeleteMyCommands, SetMyCommands
from aiogram.types import BotCommandScopeChat
from sqlalchemy import select

from bot.app import register_commands
from bot.cases.registry_edit import apply_registry
from bot.org.registry import parse_registry
from handlers.menus import RESIDENT_COMMANDS
from storage.models import CommandMenu
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    MEMBER,
    POLICE,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    UNIT_HEAD,
    Harness,
    make_harness,
)

STAFF_ONLY = {"cases", "stats", "export", "notice", "notices", "bind"}


async def help_of(h: Harness, user: int) -> str:
    await h.private(user, "/help")
    return h.last(user).text


def commands_in(text: str) -> set[str]:
    return set(re.findall(r"/([a-z_]+)", text))


def body(text: str) -> list[str]:
    lines = text.split("\n")
    assert 3 <= len(lines) - 1 <= 6, lines  # a greeting, then three to six lines
    return lines


async def test_help_by_role_in_chinese(h: Harness) -> None:
    resident = await help_of(h, RESIDENT)
    body(resident)
    assert "/report 反映问题" in resident and "/my 查看您反映的诉求和办理进度" in resident
    assert "回复机器人那条「反映问题的方式」" in resident
    assert commands_in(resident) <= set(RESIDENT_COMMANDS)
    assert not commands_in(resident) & STAFF_ONLY

    head = await help_of(h, HEAD)
    body(head)
    assert "楼栋长丙，您好！" in head
    assert "点「✅ 属实」或「❌ 不属实」" in head and "「✅ 通过」或「❌ 不通过」" in head
    assert "交办的任务点「收到」，办好后点「已完成」" in head and "「已阅」" in head
    assert "/cases" in head
    assert not commands_in(head) & {"stats", "export", "notice", "notices", "bind"}

    leader = await help_of(h, LEADER)
    body(leader)
    assert "受理、办结、上报、吹哨都在卡片上" in leader
    for command in ("cases", "case", "stats", "export", "notice", "notices", "bind", "report"):
        assert command in commands_in(leader), command

    member = await help_of(h, MEMBER)
    body(member)
    assert {"cases", "stats"} <= commands_in(member)
    assert not commands_in(member) & {"export", "notice", "notices", "bind"}

    unit = await help_of(h, UNIT_HEAD)
    body(unit)
    assert "回复那条消息发送 /report 即代为反映" in unit
    assert not commands_in(unit) & {"stats", "export", "notice", "bind"}

    community = await help_of(h, COMMUNITY_SUP)
    body(community)
    assert "上报到社区的诉求、网格的延期和挂账申请" in community
    assert {"cases", "stats", "export", "notice", "bind"} <= commands_in(community)
    assert "受理、办结、上报、吹哨都在卡片上" not in community  # not a grid leader

    police = await help_of(h, POLICE)
    body(police)
    assert "点「🙋 报到」" in police and "「✅ 已处理」" in police
    assert not commands_in(police) & STAFF_ONLY


async def test_help_by_role_in_english(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, locale="en")
    try:
        resident = await help_of(h, RESIDENT)
        body(resident)
        assert "/report Report a problem" in resident and "/my Your reports" in resident
        assert not commands_in(resident) & STAFF_ONLY
        head = await help_of(h, HEAD)
        body(head)
        assert "“✅ Accurate” or “❌ Not accurate”" in head
        assert not commands_in(head) & {"stats", "export", "notice", "bind"}
        leader = await help_of(h, LEADER)
        body(leader)
        assert {"cases", "stats", "export", "notice", "bind"} <= commands_in(leader)
        assert "accept, resolve, escalate and whistle on the card" in leader
        community = await help_of(h, COMMUNITY_SUP)
        body(community)
        assert "Cases escalated to the community" in community
        assert {"stats", "export", "notice"} <= commands_in(community)
    finally:
        await h.app.close()


async def test_several_roles_get_the_union_still_short(tmp_path: Path) -> None:
    # The community's supervisor is also the first grid's leader and a building's head.
    text = SAMPLE.read_text("utf-8")
    text = text.replace("leader: {id: 920001, name: 网格长甲}",
                        "leader: {id: 910001, name: 社区网格服务管理中心}")
    text = text.replace("head: {id: 930103, name: 楼栋长丙}",
                        "head: {id: 910001, name: 社区网格服务管理中心}")
    h = await make_harness(tmp_path)
    try:
        async with h.app.sessions() as db:
            await apply_registry(db, parse_registry(text), h.clock)
        both = await help_of(h, COMMUNITY_SUP)
        lines = body(both)
        assert "上报到社区的诉求" in both and "受理、办结、上报、吹哨都在卡片上" in both
        assert "「✅ 属实」" in both
        assert len(lines) <= 7
    finally:
        await h.app.close()


async def test_group_help_is_still_how_to_report_and_a_reply_is_a_report(h: Harness) -> None:
    await h.say(BUILDING_CHAT, LEADER, "/help")
    prompt = h.last(BUILDING_CHAT)
    assert "反映问题的方式" in prompt.text and "/stats" not in prompt.text
    await h.say(BUILDING_CHAT, RESIDENT, "电梯停了", reply_to=h.updates.bot_message(prompt))
    [case] = await h.cases()
    assert case.description == "电梯停了"


def chat_calls(h: Harness, kind: type, chat_id: int) -> list:
    return [c for c in h.api.calls_of(kind)
            if isinstance(c.scope, BotCommandScopeChat) and c.scope.chat_id == chat_id]


async def recorded(h: Harness) -> dict[int, str]:
    async with h.app.sessions() as db:
        return dict((await db.execute(select(CommandMenu.chat_id, CommandMenu.menu)))
                    .all())


async def test_menus_per_chat_set_once_not_at_restart_again_at_a_role_change(
        tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    try:
        await register_commands(h.app)
        for person in (RESIDENT, LEADER, MEMBER, HEAD, COMMUNITY_SUP, POLICE):
            await h.private(person, "/help")  # they started the bot: it may write to them
        await h.app.sync_menus()
        # The private chats' menu is the resident's: no staff command for everyone.
        assert h.api.menu_of(RESIDENT, "zh") == list(RESIDENT_COMMANDS)
        assert h.api.menu_of(POLICE, "zh") == list(RESIDENT_COMMANDS)
        assert not chat_calls(h, SetMyCommands, RESIDENT)
        leader = h.api.menu_of(LEADER, "zh")
        assert leader[:6] == ["cases", "case", "stats", "export", "notice", "notices"]
        assert set(RESIDENT_COMMANDS) <= set(leader)
        assert h.api.menu_of(LEADER, "en") == leader
        assert "待办诉求" in [d for c, d in h.api.menus[("chat", LEADER, "zh")]]
        assert "Open cases" in [d for c, d in h.api.menus[("chat", LEADER, "en")]]
        assert {lang for lang in (c.language_code for c in chat_calls(h, SetMyCommands,
                                                                      LEADER))} == {
            "zh", "en", None}
        member = h.api.menu_of(MEMBER, "zh")
        assert "stats" in member and not {"export", "notice", "notices"} & set(member)
        head = h.api.menu_of(HEAD, "zh")
        assert "cases" in head and not {"stats", "export", "notice"} & set(head)
        assert {"stats", "export", "notice"} <= set(h.api.menu_of(COMMUNITY_SUP, "zh"))
        # Someone who never started the bot gets theirs once they do.
        assert not chat_calls(h, SetMyCommands, STREET_SUP)
        assert set(await recorded(h)) == {LEADER, MEMBER, HEAD, COMMUNITY_SUP}

        # Once: another run, then a restart, set nothing again.
        calls = len(h.api.calls_of(SetMyCommands))
        await h.app.sync_menus()
        await h.app.close()
        updates = h.updates
        h = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
        h.updates = updates  # Telegram's update ids go on after a restart
        await h.app.sync_menus()
        assert len(h.api.calls_of(SetMyCommands)) == calls
        await h.private(STREET_SUP, "/help")
        await h.app.sync_menus()
        assert "export" in h.api.menu_of(STREET_SUP, "zh")

        # A registry load swaps the grid's leader and member and gives building 3 a new
        # head: their menus are set again; the old head's chat goes back to the residents'.
        text = SAMPLE.read_text("utf-8")
        text = text.replace("leader: {id: 920001, name: 网格长甲}",
                            "leader: {id: 920002, name: 网格员乙}")
        text = text.replace("- {id: 920002, name: 网格员乙}", "- {id: 920001, name: 网格长甲}")
        text = text.replace("head: {id: 930103, name: 楼栋长丙}",
                            "head: {id: 930199, name: 新楼栋长}")
        async with h.app.sessions() as db:
            await apply_registry(db, parse_registry(text), h.clock)
        before = {p: len(chat_calls(h, SetMyCommands, p)) for p in (LEADER, MEMBER,
                                                                      COMMUNITY_SUP)}
        await h.app.sync_menus()
        assert "export" not in h.api.menu_of(LEADER, "zh")
        assert "export" in h.api.menu_of(MEMBER, "zh")
        assert len(chat_calls(h, SetMyCommands, LEADER)) == before[LEADER] + 3
        assert len(chat_calls(h, SetMyCommands, COMMUNITY_SUP)) == before[COMMUNITY_SUP]
        assert len(chat_calls(h, DeleteMyCommands, HEAD)) == 3
        assert h.api.menu_of(HEAD, "zh") == list(RESIDENT_COMMANDS)
        assert HEAD not in await recorded(h)
    finally:
        await h.app.close()


async def test_a_telegram_error_leaves_the_menu_for_the_next_run(h: Harness) -> None:
    await h.private(LEADER, "/help")
    h.api.fail_next_call("setMyCommands", 500, "Internal Server Error")
    await h.app.sync_menus()  # logged, nothing raised, nothing recorded for the leader
    assert LEADER not in await recorded(h)
    await h.app.sync_menus()
    assert LEADER in await recorded(h)
    assert "stats" in h.api.menu_of(LEADER, "zh")


async def test_start_and_anything_unknown_answer_staff_by_role(h: Harness) -> None:
    """/start and a stray private message give staff their own help too, not one text for
    all staff (which showed /stats and /export to a building head)."""
    await h.private(HEAD, "/start")
    start = h.last(HEAD).text
    assert start == await help_of(h, HEAD)
    assert "stats" not in commands_in(start) and "export" not in commands_in(start)
    await h.private(LEADER, "你好")
    assert h.last(LEADER).text == await help_of(h, LEADER)
    assert "stats" in commands_in(h.last(LEADER).text)


async def test_the_rounds_commands_by_role(h: Harness) -> None:
    """Issue 22's commands in /help and the menus: 巡查 and 走访 for a grid's staff, 专项任务 for
    supervisors to send and for grid staff to complete; none of them for a building head or a
    resident."""
    leader, member = await help_of(h, LEADER), await help_of(h, MEMBER)
    for text in (leader, member):
        assert {"patrol", "visit", "tasks"} <= commands_in(text)
        assert "task" not in commands_in(text)
    community = await help_of(h, COMMUNITY_SUP)
    assert {"task", "tasks", "patrols"} <= commands_in(community)
    assert not {"patrol", "visit"} & commands_in(community)
    for user in (HEAD, RESIDENT):
        assert not {"patrol", "patrols", "visit", "task", "tasks"} & commands_in(
            await help_of(h, user))
