"""`gridbot demo` plays the whole loop; the bot registers its command menus."""

from __future__ import annotations

import io

from aiogram.methods import SetMyCommands
from aiogram.types import BotCommandScopeAllGroupChats, BotCommandScopeAllPrivateChats

from bot.app import register_commands
from bot.demo import run_demo
from tests.harness import Harness


async def test_demo_plays_report_to_rating() -> None:
    out = io.StringIO()
    await run_demo(out)
    text = out.getvalue()
    for expected in ("已收到您的诉求，编号 #1", "待核实诉求 #1", "新诉求 #1", "临期提醒",
                     "已办结", "[满意] [基本满意] [不满意]", "回访结果：满意", "最终状态：已结案"):
        assert expected in text, expected
    # The building group never sees the reporter's name after the acknowledgement.
    import re

    group_messages = [re.split(r"\n(?:\[|    →)", block)[0]
                      for block in text.split("→ 3号楼群")[1:]]
    assert len(group_messages) == 2
    assert all("居民小王" not in message for message in group_messages)


async def test_command_menus_for_private_and_groups_in_both_locales(h: Harness) -> None:
    await register_commands(h.app)
    calls = h.api.calls_of(SetMyCommands)
    seen = {(type(c.scope), c.language_code) for c in calls}
    for scope in (BotCommandScopeAllPrivateChats, BotCommandScopeAllGroupChats):
        assert {(scope, "zh"), (scope, "en"), (scope, None)} <= seen
    private_zh = next(c for c in calls if isinstance(c.scope, BotCommandScopeAllPrivateChats)
                      and c.language_code == "zh")
    # Every private chat's menu is the resident's: staff get theirs per chat
    # (tests/test_help_by_role.py), so no resident is offered /cases, /stats or /export.
    private = {c.command for c in private_zh.commands}
    assert private >= {"report", "my", "case", "cancel"}
    assert not private & {"cases", "stats", "export", "notice", "notices"}
    assert any(c.description == "反映问题" for c in private_zh.commands)
    group_en = next(c for c in calls if isinstance(c.scope, BotCommandScopeAllGroupChats)
                    and c.language_code == "en")
    assert "bind" in {c.command for c in group_en.commands}
