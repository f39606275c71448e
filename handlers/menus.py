"""What each person may do, by role: the lines of `/help` in a private chat and the commands of
their private chat's menu (`setMyCommands` with a chat scope).

The commands a role may use are those the handlers admit: /cases and /case any role
(bot/cases/views.staff_cases), /stats and /export `handlers.stats` STATS_ROLES and
EXPORT_ROLES, /notice and /notices the notices' SENDER_ROLES, /bind the roles that may bind
(in a group). A resident (and a department's contact person, whose cards carry their buttons)
has the resident commands, the menu of every private chat; a person with roles gets a menu of
their own, set once per change: `sync` records what it set in `command_menus` (the menu's
hash, over its commands and descriptions in every locale) and sets it again only when that
changes (roles, a release's descriptions), never at each restart. Someone the bot cannot
write to yet (`people.dm_ok` not true) gets theirs once they start the bot. A person who
loses every role has their chat's menu deleted, so the private chats' menu applies again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import DeleteMyCommands, SetMyCommands, TelegramMethod
from aiogram.types import BotCommand, BotCommandScopeChat
from markupsafe import Markup
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import user_text
from bot.clock import Clock
from bot.config import LOCALES
from bot.notices.service import SENDER_ROLES
from bot.org.directory import directory
from bot.org.roles import BINDING_ROLES, Actor, RoleName
from bot.rounds import campaigns, care, patrols
from bot.texts import Texts
from handlers.stats import EXPORT_ROLES, STATS_ROLES
from storage.models import CommandMenu, Person

log = logging.getLogger(__name__)

# Every private chat's menu: what anyone may do (a resident; a department's contact person).
RESIDENT_COMMANDS = ("report", "my", "case", "cancel", "whoami", "help")
GROUP_COMMANDS = ("report", "bind", "whoami", "help", "cancel")
ALL_ROLES = frozenset(RoleName)
# The commands beyond the resident's, each with the roles the handlers admit, in menu order.
STAFF_COMMANDS: tuple[tuple[str, frozenset[RoleName]], ...] = (
    ("cases", ALL_ROLES),
    ("case", ALL_ROLES),
    ("stats", frozenset(STATS_ROLES)),
    ("export", frozenset(EXPORT_ROLES)),
    ("notice", frozenset(SENDER_ROLES)),
    ("notices", frozenset(SENDER_ROLES)),
    # The grid's own rounds (issue 22): 巡查, 走访, 专项任务.
    ("patrol", frozenset(patrols.PATROL_ROLES)),
    ("patrols", frozenset(patrols.PATROL_ROLES) | frozenset(care.SUPERVISOR_ROLES)),
    ("visit", frozenset(care.STAFF_ROLES)),
    ("task", frozenset(campaigns.SENDER_ROLES)),
    ("tasks", frozenset(campaigns.SENDER_ROLES) | frozenset(campaigns.STAFF_ROLES)),
)
# Who does what, by role, widest first: each role's lines of /help.
DUTIES: tuple[tuple[RoleName, tuple[str, ...]], ...] = (
    (RoleName.STREET_SUPERVISOR, ("help_duty_street_supervisor",)),
    (RoleName.COMMUNITY_SUPERVISOR, ("help_duty_community_supervisor",)),
    (RoleName.GRID_LEADER, ("help_duty_grid_leader",)),
    (RoleName.GRID_MEMBER, ("help_duty_grid_member",)),
    (RoleName.BUILDING_HEAD, ("help_duty_building_head", "help_duty_tasks")),
    (RoleName.UNIT_HEAD, ("help_duty_unit_head",)),
)
# /help says this much at most below its greeting, whatever the roles held.
MAX_LINES = 6
# Telegram's contract (setMyCommands, BotCommand).
MAX_COMMANDS = 100
COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
DESCRIPTION_LIMIT = 256


def private_commands(roles: Iterable[RoleName]) -> tuple[str, ...]:
    """The commands of a private chat's menu for someone holding `roles`."""
    held = set(roles)
    if not held:
        return RESIDENT_COMMANDS
    staff = tuple(name for name, who in STAFF_COMMANDS if held & who)
    return staff + tuple(n for n in RESIDENT_COMMANDS if n not in staff)


def help_lines(texts: Texts, name: str, roles: Iterable[RoleName], department: bool
               ) -> list[Markup]:
    """/help in a private chat: a greeting, then at most MAX_LINES lines of what this person
    may do; with several roles, the union (their duties, then the commands they may use)."""
    held = set(roles)
    t = texts.label
    hello = t("help_hello", name=name) if name else t("help_hello_anon")
    if not held:
        lines = [t("help_resident_report")]
        if department:
            lines.insert(0, t("help_duty_department"))
        else:
            lines.append(t("help_resident_group"))
        return [hello, *lines, t("help_resident_follow"), t("help_cancel")]
    duties = [key for role, keys in DUTIES if role in held for key in keys]
    if department:
        duties.append("help_duty_department")
    tools = [t(f"help_tool_{key}") for key, who in (
        ("stats", STATS_ROLES), ("export", EXPORT_ROLES), ("notice", SENDER_ROLES),
        ("rounds", care.STAFF_ROLES), ("task", campaigns.SENDER_ROLES),
        ("bind", BINDING_ROLES)) if held & set(who)]
    rest = [t("help_cases")]
    if tools:
        joiner = "；" if texts.locale == "zh_CN" else "; "
        rest.append(Markup(joiner).join(tools))
    rest.append(t("help_staff_report"))
    room = MAX_LINES - len(rest)
    return [hello, *(t(key) for key in duties[:room]), *rest]


def help_text(texts: Texts, name: str, roles: Iterable[RoleName], department: bool) -> str:
    return str(Markup("\n").join(help_lines(texts, name, roles, department)))


async def help_for(db: AsyncSession, texts: Texts, actor: Actor) -> str:
    """What `actor` may do, by role: /help, /start and anything unknown said privately."""
    department = bool((await directory(db)).departments_of(actor.id))
    return help_text(texts, user_text.clean_name(actor.name),
                     (role for role, _ in actor.roles), department)


# --- the menus --------------------------------------------------------------------------------


def bot_commands(texts: Texts, names: Sequence[str]) -> list[BotCommand]:
    """A menu in one locale, checked against Telegram's contract (a broken template is an
    error here, not a 400 at every start)."""
    if not 0 < len(names) <= MAX_COMMANDS:
        raise ValueError(f"a menu holds 1 to {MAX_COMMANDS} commands, not {len(names)}")
    commands = []
    for name in names:
        description = texts.plain(f"cmd_{name}")
        if not COMMAND.match(name) or not 0 < len(description) <= DESCRIPTION_LIMIT:
            raise ValueError(f"command {name!r} ({description!r}) breaks Telegram's rules")
        commands.append(BotCommand(command=name, description=description))
    return commands


def language(locale: str) -> str:
    return locale.split("_")[0]


class Menus:
    """Each staff person's private menu, in every locale: `sync` sets what changed."""

    def __init__(self, templates_dir: Path, default_locale: str) -> None:
        self.texts = {locale: Texts(templates_dir, locale) for locale in LOCALES}
        self.default_locale = default_locale

    def variants(self, names: Sequence[str]) -> list[tuple[str | None, list[BotCommand]]]:
        """(language code, commands) for each locale, and None: the bot's own locale for
        users of any other language."""
        out: list[tuple[str | None, list[BotCommand]]] = [
            (language(locale), bot_commands(texts, names)) for locale, texts in self.texts.items()]
        out.append((None, bot_commands(self.texts[self.default_locale], names)))
        return out

    def key(self, names: Sequence[str]) -> str:
        """What `command_menus.menu` records: a hash of the menu as set, in every language."""
        body = json.dumps([(lang, [(c.command, c.description) for c in commands])
                           for lang, commands in self.variants(names)], ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    async def wanted(self, db: AsyncSession) -> dict[int, tuple[str, ...]]:
        """The people with roles whom the bot can write to, and their menus."""
        d = await directory(db)
        reachable = set((await db.scalars(
            select(Person.id).where(Person.id.in_(list(d.roles_of)),
                                    Person.dm_ok.is_(True)))).all())
        out = {}
        for person_id, roles in d.roles_of.items():
            names = private_commands(RoleName(r) for r, _ in roles)
            if person_id in reachable and names != RESIDENT_COMMANDS:
                out[person_id] = names
        return out

    async def sync(self, bot: Bot, sessions: async_sessionmaker[AsyncSession],
                   clock: Clock) -> int:
        """Set the menus that changed and delete those of people who lost their roles; return
        how many chats were changed. A Telegram error is logged and that chat is tried again
        at the next run (nothing recorded); a flood wait ends this run."""
        async with sessions() as db:
            wanted = await self.wanted(db)
            recorded = dict((await db.execute(
                select(CommandMenu.chat_id, CommandMenu.menu))).all())
        changed = 0
        for chat_id, names in wanted.items():
            key = self.key(names)
            if recorded.get(chat_id) == key:
                continue
            scope = BotCommandScopeChat(chat_id=chat_id)
            done = await _calls(bot, chat_id, [
                SetMyCommands(commands=commands, scope=scope, language_code=lang)
                for lang, commands in self.variants(names)])
            if done is not True:
                if done is FLOOD:
                    return changed
                continue
            async with sessions() as db:
                row = await db.get(CommandMenu, chat_id)
                if row is None:
                    db.add(CommandMenu(chat_id=chat_id, menu=key, set_at=clock.now()))
                else:
                    row.menu, row.set_at = key, clock.now()
                await db.commit()
            changed += 1
        for chat_id in recorded.keys() - wanted.keys():
            scope = BotCommandScopeChat(chat_id=chat_id)
            deletes = [DeleteMyCommands(scope=scope, language_code=language(locale))
                       for locale in self.texts]
            deletes.append(DeleteMyCommands(scope=scope))
            done = await _calls(bot, chat_id, deletes, gone_ok=True)
            if done is not True:
                if done is FLOOD:
                    return changed
                continue
            async with sessions() as db:
                await db.execute(delete(CommandMenu).where(CommandMenu.chat_id == chat_id))
                await db.commit()
            changed += 1
        if changed:
            log.info("command menus: %d chats changed", changed)
        return changed


FLOOD = "flood"


async def _calls(bot: Bot, chat_id: int, methods: Sequence[TelegramMethod[bool]],
                 gone_ok: bool = False) -> bool | str:
    """One chat's calls in order: True when all went through (for a delete, a chat Telegram
    refuses counts as done: nobody sees its menu), False when one failed (logged), FLOOD
    when Telegram asks to wait (the run stops)."""
    try:
        for method in methods:
            await bot(method)
    except TelegramUnauthorizedError:
        raise
    except TelegramRetryAfter as exc:
        log.warning("command menus: flood wait %ss; the rest at the next run", exc.retry_after)
        return FLOOD
    except (TelegramBadRequest, TelegramForbiddenError) as exc:
        if gone_ok:
            return True
        log.info("command menu of chat %s not set: %s", chat_id, exc.message)
        return False
    except Exception as exc:
        log.warning("command menu of chat %s not changed (%s); tried again later", chat_id,
                    type(exc).__name__)
        return False
    return True
