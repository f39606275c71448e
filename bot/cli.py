"""The `gridbot` command: run, webhook, demo, registry load, privacy export / erase, inbox,
outbox, db, stats, export, poster, care.

Each subcommand imports what it uses inside its own function: `gridbot --help` or a one-line
error must not wait for aiogram, matplotlib and openpyxl to load. All of these imports point
down the layers (the CLI is the top), so none of them hides a cycle."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import SystemClock
from bot.config import Settings
from bot.logs import setup as setup_logs
from bot.user_text import typed_number
from storage.db import SchemaError

if TYPE_CHECKING:
    from bot.app import App


class CliError(Exception):
    """A problem the person at the terminal can fix; printed as one line, no traceback."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "GRIDBOT_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise CliError(f"{name}: {first['msg']}") from exc


async def _load_registry(settings: Settings, path: Path) -> str:
    from bot.cases.registry_edit import apply_registry
    from bot.org.registry import RegistryError, parse_registry
    from storage.db import create_schema, make_engine, make_sessionmaker

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text") from exc
    try:
        model = parse_registry(text, path.parent)  # boundary_file is relative to it
    except RegistryError as exc:
        lines = "\n".join(f"  {path}: {p}" for p in exc.problems)
        raise CliError(f"registry rejected, nothing was changed:\n{lines}") from exc
    engine = make_engine(settings.database_url)
    try:
        await create_schema(engine)
        async with make_sessionmaker(engine)() as db:
            report = await apply_registry(db, model, SystemClock())
    finally:
        await engine.dispose()
    summary = (f"registry loaded from {path}: {report.nodes} places, {report.people} people, "
               f"{report.roles} roles, {report.categories} categories, "
               f"{report.departments} departments")
    if report.deactivated:
        summary += f"; no longer in the file (kept for old cases): {', '.join(report.deactivated)}"
    return summary


@asynccontextmanager
async def _database(settings: Settings, *, read: bool = False) -> AsyncIterator[AsyncSession]:
    """A session on the configured database; `read`: in read transactions, which never hold
    up the bot's writes (figures and exports)."""
    from storage.db import create_schema, make_engine, make_sessionmaker, read_only

    engine = make_engine(settings.database_url)
    try:
        await create_schema(engine)
        async with make_sessionmaker(read_only(engine) if read else engine)() as db:
            yield db
    finally:
        await engine.dispose()


# Telegram user ids and our row ids: at most 15 digits (a user id is below 2**52).
ID_DIGITS = 15


def _user_id(text: str) -> int:
    # A typed number (user_text.typed_number): "²" passes str.isdigit() and int() refuses it.
    user_id = typed_number(text, digits=ID_DIGITS)
    if not user_id:
        raise CliError(f"USER_ID must be a Telegram user id (a positive number), not {text!r}")
    return user_id


def _row_id(text: str | None, what: str) -> int | None:
    """The ID of `inbox retry` / `outbox retry`, if given."""
    if text is None:
        return None
    row_id = typed_number(text, digits=ID_DIGITS)
    if row_id is None:
        raise CliError(f"ID must be {what} (a number), not {text!r}")
    return row_id


async def _privacy(settings: Settings, action: str, user_id: int, out: Path | None) -> str:
    from bot.ops.privacy import PrivacyError, erase_person, export_person

    try:
        async with _database(settings) as db:
            if action == "erase":
                return (await erase_person(db, user_id)).summary()
            data = await export_person(db, user_id, SystemClock().now())
    except PrivacyError as exc:
        raise CliError(str(exc)) from exc
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if out is None:
        return text
    try:
        # Readable by its owner only: it is one person's data.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}") from exc
    return f"wrote everything held about Telegram user {user_id} to {out}"


async def _outbox(settings: Settings, action: str | None, row_id: str | None,
                  status: str | None, limit: int) -> str:
    from bot.ops import outbox_admin
    from bot.ops.terminal import local_zone

    number = _row_id(row_id, "an outbox message id") if action == "retry" else None
    async with _database(settings) as db:
        if action == "retry":
            try:
                count = await outbox_admin.retry(db, SystemClock().now(), number)
            except outbox_admin.OutboxError as exc:
                raise CliError(str(exc)) from exc
            if row_id is not None:
                return f"outbox message {row_id} requeued"
            return f"{count} failed outbox message{'s' if count != 1 else ''} requeued"
        found = await outbox_admin.listing(db, status=status, limit=limit)
        return outbox_admin.render(found, await local_zone(db))


async def _inbox(settings: Settings, action: str | None, row_id: str | None,
                 status: str | None, limit: int) -> str:
    from bot.ops import inbox_admin
    from bot.ops.terminal import local_zone

    number = _row_id(row_id, "an inbox row id") if action == "retry" else None
    async with _database(settings) as db:
        if action == "retry":
            try:
                count = await inbox_admin.retry(db, number)
            except inbox_admin.InboxError as exc:
                raise CliError(str(exc)) from exc
            if row_id is not None:
                return f"inbox row {row_id} requeued"
            return f"{count} update{'s' if count != 1 else ''} requeued"
        found = await inbox_admin.listing(db, status=status, limit=limit)
        return inbox_admin.render(found, await local_zone(db))


async def _db(settings: Settings, action: str, to: str | None) -> str:
    from storage.db import create_schema, make_engine, schema_state

    if action == "copy" and to is not None:
        return await _db_copy(settings, to)
    engine = make_engine(settings.database_url)
    try:
        if action == "current":
            return (await schema_state(engine)).describe()
        return (await create_schema(engine, upgrade=True)).describe()
    finally:
        await engine.dispose()


async def _db_copy(settings: Settings, to: str) -> str:
    from storage.copy import CopyRefused, copy_database
    from storage.db import make_engine

    if to == settings.database_url:
        raise CliError("--to names GRIDBOT_DATABASE_URL itself: give the new database's URL")
    source = make_engine(settings.database_url)
    try:
        try:
            target = make_engine(to)
        except (ArgumentError, NoSuchModuleError) as exc:
            # The URL may hold a password: say what is wrong with it, never echo it.
            raise CliError(f"cannot use the database --to: {str(exc).splitlines()[0]}") from exc
        try:
            try:
                # Reached first, so a wrong --to is not blamed on GRIDBOT_DATABASE_URL.
                async with target.connect():
                    pass
            except (OperationalError, OSError) as exc:
                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                raise CliError(f"cannot use the database --to: {reason}") from exc
            return (await copy_database(source, target)).describe()
        except CopyRefused as exc:
            raise CliError(str(exc)) from exc
        finally:
            await target.dispose()
    finally:
        await source.dispose()


# (attribute, how `gridbot stats` names it); a rate follows the count it is of.
_STAT_LINES: tuple[tuple[str, str], ...] = (
    ("received", "受理数 received"),
    ("resolved", "办结数 resolved (of those received)"),
    ("resolve_rate", "办结率 resolve rate"),
    ("due", "应结案数 due"),
    ("closed", "结案数 closed"),
    ("close_rate", "结案率 close rate"),
    ("closed_on_time", "按期结案数 closed on time"),
    ("on_time_rate", "按期结案率 on-time rate"),
    ("closed_late", "超期结案数 closed late"),
    ("overdue_factor", "处置超时倍数 overdue factor"),
    ("open_at_end", "待处置 open at the end"),
    ("overdue_at_end", "超期待处置 overdue at the end"),
    ("reworked", "返工数 reworked"),
    ("rework_rate", "返工率 rework rate"),
    ("escalated_community", "上报社区 escalated to the community"),
    ("escalated_street", "上报街道 escalated to the street"),
    ("rated", "评价数 rated"),
    ("satisfied", "满意 satisfied"),
    ("fairly_satisfied", "基本满意 fairly satisfied"),
    ("unsatisfied", "不满意 unsatisfied"),
    ("satisfaction_rate", "满意率 satisfaction rate"),
    ("no_feedback", "未评价 no feedback"),
    ("accept_hours_median", "受理用时中位数 hours to accept, median"),
    ("accept_hours_p90", "受理用时90分位 hours to accept, 90th percentile"),
    ("resolve_hours_median", "处置用时中位数 hours to resolve, median"),
    ("resolve_hours_p90", "处置用时90分位 hours to resolve, 90th percentile"),
)


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character takes two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _stat(name: str, value: Any) -> str:
    from bot.ledger.figures import RATES

    if value is None:
        return "—"
    if name in RATES:
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _period_text(month: str) -> None:
    """A malformed --month is refused before the database is opened."""
    from bot.ledger.figures import Period

    try:
        Period.parse(month, "UTC")
    except ValueError as exc:
        raise CliError(f"--month: {exc}") from exc


async def _period_and_scope(db: AsyncSession, month: str, scope: str | None
                            ) -> tuple[Any, Any]:
    from bot.ledger.figures import Period, PeriodRefused, ScopeError, askable, scope_place
    from bot.org.directory import org_settings

    settings = await org_settings(db)
    if settings is None:
        raise CliError("no registry is loaded: run `gridbot registry load FILE` first")
    try:
        period = Period.parse(month, settings.timezone)
    except ValueError as exc:
        raise CliError(f"--month: {exc}") from exc
    try:
        place = await scope_place(db, scope)
    except ScopeError as exc:
        raise CliError(f"--scope: {exc}") from exc
    try:
        await askable(db, period, datetime.now(UTC))
    except PeriodRefused as exc:
        raise CliError(f"--month: {exc}") from exc
    return period, place


async def _stats(settings: Settings, month: str, scope: str | None, as_json: bool) -> str:
    from bot.ledger import rounds
    from bot.ledger.figures import breakdown, compute
    from bot.org.directory import NodeKind

    _period_text(month)
    async with _database(settings, read=True) as db:
        period, place = await _period_and_scope(db, month, scope)
        fig = await compute(db, period, scope)
        # A grid's own figures say it all; above a grid, each grid's too.
        grids = [] if place is not None and place.kind in (NodeKind.GRID, NodeKind.BUILDING) else (
            await breakdown(db, period, scope, "grid"))
        # The grid's rounds (patrols, care visits, campaigns): None for a building.
        round_fig = await rounds.compute(db, period, scope)
        round_grids = (await rounds.breakdown(db, period, scope, "grid")) if grids else []
    name = f"{place.code} {place.name}" if place is not None else "all"
    if as_json:
        return json.dumps({
            "period": period.label, "timezone": period.tz,
            "start": period.start.isoformat(), "end": period.end.isoformat(),
            "scope": place.code if place is not None else None,
            "figures": fig.as_dict(),
            "grids": [{"code": code, "name": grid_name, "figures": f.as_dict()}
                      for code, grid_name, f in grids],
            "rounds": {
                "figures": round_fig.as_dict() if round_fig is not None else None,
                "grids": [{"code": code, "name": grid_name, "figures": f.as_dict()}
                          for code, grid_name, f in round_grids],
            },
        }, ensure_ascii=False, indent=2)
    width = max(_width(label) for _, label in _STAT_LINES)
    lines = [f"{period.label} ({period.tz}) · {name}"]
    lines += [f"  {label}{' ' * (width - _width(label))}  {_stat(attr, getattr(fig, attr))}"
              for attr, label in _STAT_LINES]
    if grids:
        lines.append("per grid: received / due / closed / on time / on-time rate / "
                     "reworked / satisfaction rate")
        for code, grid_name, f in grids:
            lines.append(f"  {code} {grid_name}: {f.received} / {f.due} / {f.closed} / "
                         f"{f.closed_on_time} / {_stat('on_time_rate', f.on_time_rate)} / "
                         f"{f.reworked} / {_stat('satisfaction_rate', f.satisfaction_rate)}")
    if round_fig is not None:
        r = round_fig

        def pct(rate: float | None) -> str:
            return "—" if rate is None else f"{100 * rate:.1f}%"

        lines.append(f"rounds: {r.patrols} patrols, {r.patrol_hours:.1f} h, coverage "
                     f"{pct(r.coverage_rate)}, {r.found_on_patrol} found on "
                     f"patrol; visit rate {pct(r.visit_rate)} "
                     f"({r.visits_on_time}/{r.visits_due}), {r.visits} visits, "
                     f"{r.visits_overdue} overdue; campaigns "
                     f"{pct(r.task_rate)} ({r.tasks_on_time}/{r.tasks}), "
                     f"{r.tasks_late} late, {r.tasks_cannot} cannot, {r.tasks_overdue} overdue")
    return "\n".join(lines)


async def _export(settings: Settings, month: str, scope: str | None, fmt: str | None,
                  out: Path) -> str:
    from bot.ledger.export import write_ledger

    _period_text(month)
    by_name = fmt is None and out.suffix.lower() == ".csv"
    kind: Literal["xlsx", "csv"] = "csv" if fmt == "csv" or by_name else "xlsx"
    async with _database(settings, read=True) as db:
        period, _place = await _period_and_scope(db, month, scope)
        locale = await _locale(db)
        try:
            # Readable by its owner only: it names residents.
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise CliError(f"cannot write {out}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                rows = await write_ledger(db, period, scope, f, kind, locale)
        except BaseException:
            out.unlink(missing_ok=True)  # never leave half a ledger behind
            raise
    return (f"wrote the {period.label} ledger ({rows} case{'s' if rows != 1 else ''}"
            f"{' of ' + scope if scope else ''}) to {out} as {kind}")


async def _poster(settings: Settings, building: str | None, grid: str | None, renew: bool,
                  out: Path) -> str:
    """扫码报事 posters into `out`: the font is found first, then the bot's username is asked
    of the Bot API (getMe), as `gridbot run` does, for the links in the QR codes."""
    from bot.ops.posters import NoFont, PosterError, find_font, write_posters

    try:
        font = find_font(settings.poster_font)
    except NoFont as exc:
        raise CliError(str(exc)) from exc
    if out.exists() and not out.is_dir():
        raise CliError(f"-o: {out} is not a folder")
    app = await _started(settings, None)
    try:
        async with app.sessions() as db:
            files = await write_posters(db, app.ctx.texts, app.ctx.deep_link, out, font,
                                        building=building, grid=grid, renew=renew)
    except PosterError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write the posters into {out}: {exc.strerror or exc}") from exc
    finally:
        await app.close()
    codes = ", ".join(png.stem for png, _pdf in files)
    summary = (f"wrote {len(files)} poster{'s' if len(files) != 1 else ''} (PDF and PNG, A4) "
               f"for @{app.ctx.bot_username} to {out}: {codes}")
    if renew:
        summary += "; their links are new: the posters printed before no longer work"
    return summary


async def _care(settings: Settings, args: argparse.Namespace) -> str:
    """`gridbot care import|export|erase`: the care roster (走访), an operator's tool."""
    from bot.rounds.care_roster import RosterError, erase_household, import_roster, write_roster

    try:
        if args.action == "import":
            path: Path = args.file
            if not path.is_file():
                raise CliError(f"cannot read {path}: no such file")
            async with _database(settings) as db:
                return (await import_roster(db, path, SystemClock().now())).summary(path)
        if args.action == "erase":
            async with _database(settings) as db:
                return await erase_household(db, args.building, args.door, args.unit or "")
        out: Path = args.out
        async with _database(settings, read=True) as db:
            try:
                # Readable by its owner only: personal data of vulnerable people.
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except OSError as exc:
                raise CliError(f"cannot write {out}: {exc.strerror}") from exc
            try:
                with os.fdopen(fd, "wb") as f:
                    count = await write_roster(db, f, args.scope)
            except BaseException:
                out.unlink(missing_ok=True)
                raise
        return (f"wrote the care roster ({count} household{'s' if count != 1 else ''}"
                f"{' of ' + args.scope if args.scope else ''}) and its visits to {out}")
    except RosterError as exc:
        if args.action == "import":
            raise CliError(f"roster rejected, nothing was loaded:\n{exc.summary()}") from exc
        raise CliError(exc.summary().strip()) from exc


async def _locale(db: AsyncSession) -> str:
    from bot.org.directory import org_settings

    settings = await org_settings(db)
    return settings.locale if settings is not None else "zh_CN"


async def _started(settings: Settings, registry: Path | None) -> App:
    """The App of `gridbot run` / `gridbot webhook`, its token checked with the Bot API."""
    from aiogram.exceptions import (
        ClientDecodeError,
        TelegramAPIError,
        TelegramNetworkError,
        TelegramUnauthorizedError,
    )
    from aiogram.utils.token import TokenValidationError, validate_token

    from bot.app import build_app

    if settings.bot_token is None:
        raise CliError("GRIDBOT_BOT_TOKEN is not set: create a bot with @BotFather and put its "
                       "token in the environment or in .env")
    try:
        validate_token(settings.bot_token.get_secret_value())
    except TokenValidationError as exc:
        raise CliError("GRIDBOT_BOT_TOKEN does not look like a bot token (digits, a colon, "
                       "then letters; copy it from @BotFather)") from exc
    if registry is not None:
        print(await _load_registry(settings, registry))
    app = await build_app(settings)
    try:
        await app.identify()
    except TelegramUnauthorizedError as exc:
        await app.close()
        raise CliError("the Bot API refused GRIDBOT_BOT_TOKEN (check it with @BotFather)") from exc
    except (TelegramNetworkError, OSError) as exc:
        await app.close()
        raise CliError(f"cannot reach the Bot API at {settings.api_url}: {exc}") from exc
    except (TelegramAPIError, ClientDecodeError) as exc:
        await app.close()
        raise CliError(f"{settings.api_url} did not answer like the Bot API: "
                       f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from exc
    logging.getLogger("gridbot").info("running as @%s", app.ctx.bot_username)
    return app


REVOKED = ("the Bot API refused GRIDBOT_BOT_TOKEN while running (revoked? check it with "
           "@BotFather)")


async def _serve(settings: Settings, registry: Path | None,
                 serve: Callable[[App], Awaitable[None]]) -> None:
    """Start the bot and serve it until it is stopped; what a person must fix ends it with
    one line."""
    from aiogram.exceptions import TelegramUnauthorizedError

    from bot.telegram.webhook import CannotListen

    app = await _started(settings, registry)
    try:
        await serve(app)
    except TelegramUnauthorizedError as exc:
        raise CliError(REVOKED) from exc
    except CannotListen as exc:
        raise CliError(f"cannot listen on GRIDBOT_LISTEN {settings.listen}: {exc}") from exc


async def _run(settings: Settings, registry: Path | None) -> None:
    from bot.app import run_polling

    await _serve(settings, registry, run_polling)


def _webhook_settings(settings: Settings) -> None:
    from bot.telegram.webhook import webhook_path

    if settings.webhook_url is None:
        raise CliError("GRIDBOT_WEBHOOK_URL is not set: the public https:// address the "
                       "reverse proxy passes to this process, e.g. "
                       "https://bot.example.org/telegram")
    if settings.webhook_secret is None:
        raise CliError("GRIDBOT_WEBHOOK_SECRET is not set: 1 to 256 characters of A-Z, a-z, "
                       "0-9, _ and - (e.g. from `openssl rand -hex 32`)")
    if webhook_path(settings.webhook_url) in ("/healthz", "/metrics"):
        raise CliError("GRIDBOT_WEBHOOK_URL: its path must not be /healthz or /metrics")


async def _webhook(settings: Settings, registry: Path | None) -> None:
    from aiogram.exceptions import TelegramBadRequest

    from bot.app import run_webhook

    async def serve(app: App) -> None:
        try:
            await run_webhook(app)
        except TelegramBadRequest as exc:
            raise CliError(f"the Bot API refused GRIDBOT_WEBHOOK_URL: {exc.message}") from exc

    _webhook_settings(settings)
    await _serve(settings, registry, serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gridbot", description="Gridbot: grid case handling "
                                     "in Telegram chats")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot with long polling (with /healthz and "
                         "/metrics when GRIDBOT_LISTEN is set)")
    run.add_argument("--registry", type=Path, help="load this registry file before starting")
    hook = sub.add_parser("webhook", help="run the bot behind a webhook (GRIDBOT_WEBHOOK_URL), "
                          "with /healthz and /metrics")
    hook.add_argument("--registry", type=Path, help="load this registry file before starting")
    sub.add_parser("demo", help="play one case end to end against a fake Bot API, offline")
    reg = sub.add_parser("registry", help="the organisation registry")
    reg_sub = reg.add_subparsers(dest="action", required=True)
    load = reg_sub.add_parser("load", help="load or update the registry from a YAML file")
    load.add_argument("file", type=Path)
    priv = sub.add_parser("privacy", help="a person's data: export it, or erase it")
    priv_sub = priv.add_subparsers(dest="action", required=True)
    export = priv_sub.add_parser("export", help="everything held about a person, as JSON")
    export.add_argument("user_id", metavar="USER_ID", help="their Telegram user id")
    export.add_argument("--out", type=Path, help="write the JSON to this file, not stdout")
    erase = priv_sub.add_parser("erase", help="remove a person's data; their cases stay, "
                                "anonymised")
    erase.add_argument("user_id", metavar="USER_ID", help="their Telegram user id")
    box = sub.add_parser("outbox", help="messages waiting or stuck (no texts shown)")
    box.add_argument("--status", choices=("pending", "held", "failed", "undeliverable"),
                     help="only this status")
    box.add_argument("--limit", type=int, default=100, help="list at most this many rows")
    box_sub = box.add_subparsers(dest="action")
    again = box_sub.add_parser("retry", help="requeue failed messages, or the one given")
    again.add_argument("id", metavar="ID", nargs="?", help="one outbox message id")
    inbox = sub.add_parser("inbox", help="updates set aside or failed (no texts shown)")
    inbox.add_argument("--status", choices=("set_aside", "failed", "new"),
                       help="only this status")
    inbox.add_argument("--limit", type=int, default=100, help="list at most this many rows")
    inbox_sub = inbox.add_subparsers(dest="action")
    requeue = inbox_sub.add_parser("retry", help="hand set-aside and failed updates to the "
                                   "handlers again, or the one given")
    requeue.add_argument("id", metavar="ID", nargs="?", help="one inbox row id")
    db = sub.add_parser("db", help="the database schema: where it stands, upgrade it")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_sub.add_parser("current", help="the schema revision the database is at (changes nothing)")
    db_sub.add_parser("upgrade", help="create a new database, or bring one made by an earlier "
                      "Gridbot to this one's schema (back it up first)")
    copy = db_sub.add_parser("copy", help="copy every row into a new, empty database (from "
                             "SQLite to PostgreSQL); stop the bot first")
    copy.add_argument("--to", required=True, metavar="URL",
                      help="the new database, e.g. postgresql+asyncpg://gridbot@host/gridbot")
    stats = sub.add_parser("stats", help="the assessment figures of a month and a scope")
    stats.add_argument("--month", required=True, metavar="YYYY-MM",
                       help="the month, e.g. 2026-10, or days 2026-10-01..2026-10-15, in "
                       "the registry's timezone")
    stats.add_argument("--scope", metavar="CODE", help="a street, community, grid or "
                       "building code (default: everything)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    ledger = sub.add_parser("export", help="the 台账 of a month: one row per case, as Excel "
                            "or CSV")
    ledger.add_argument("--month", required=True, metavar="YYYY-MM",
                        help="the month, e.g. 2026-10, or days 2026-10-01..2026-10-15")
    ledger.add_argument("--scope", metavar="CODE", help="a street, community, grid or "
                        "building code (default: everything)")
    ledger.add_argument("--format", choices=("xlsx", "csv"),
                        help="xlsx (default) or csv (UTF-8 with BOM); a FILE ending in .csv "
                        "is csv")
    ledger.add_argument("-o", "--out", required=True, type=Path, metavar="FILE",
                        help="the file to write")
    poster = sub.add_parser("poster", help="扫码报事 posters: one A4 PDF and PNG per building, "
                            "with a QR code that opens a report already placed in it")
    which = poster.add_mutually_exclusive_group(required=True)
    which.add_argument("--building", metavar="CODE", help="one building")
    which.add_argument("--grid", metavar="CODE", help="every building of a grid")
    which.add_argument("--all", action="store_true", help="every building")
    poster.add_argument("--renew", action="store_true", help="give the buildings new links: "
                        "the posters printed before stop working")
    poster.add_argument("-o", "--out", required=True, type=Path, metavar="DIR",
                        help="the folder to write CODE.pdf and CODE.png into")
    care = sub.add_parser("care", help="the care roster (走访): import it from Excel or CSV, "
                          "export it with its visits, erase a household")
    care_sub = care.add_subparsers(dest="action", required=True)
    care_in = care_sub.add_parser("import", help="load or update the roster from an .xlsx or "
                                  ".csv file (楼栋, 单元, 门牌号, 姓名, 类别, 走访周期, "
                                  "联系电话, 备注)")
    care_in.add_argument("file", type=Path, metavar="FILE")
    care_out = care_sub.add_parser("export", help="the roster and its visits, as Excel")
    care_out.add_argument("-o", "--out", required=True, type=Path, metavar="FILE",
                          help="the .xlsx file to write")
    care_out.add_argument("--scope", metavar="CODE", help="a street, community, grid or "
                          "building code (default: everything)")
    care_erase = care_sub.add_parser("erase", help="delete one household and its visits")
    care_erase.add_argument("--building", required=True, metavar="CODE")
    care_erase.add_argument("--unit", metavar="UNIT", help="its 单元, if it has one")
    care_erase.add_argument("--door", required=True, metavar="DOOR", help="its 门牌号")
    args = parser.parse_args(argv)

    level = logging.WARNING if args.command == "demo" else logging.INFO
    try:
        log_format = Settings().log_format
    except ValidationError:
        log_format = "text"  # the command reports the bad setting in one line
    setup_logs(level, log_format)
    try:
        if args.command == "demo":
            from bot.demo import run_demo

            asyncio.run(run_demo(sys.stdout))
        elif args.command == "registry":
            print(asyncio.run(_load_registry(_settings(), args.file)))
        elif args.command == "privacy":
            user_id = _user_id(args.user_id)
            print(asyncio.run(_privacy(_settings(), args.action, user_id,
                                       getattr(args, "out", None))))
        elif args.command == "inbox":
            print(asyncio.run(_inbox(_settings(), args.action, getattr(args, "id", None),
                                     args.status, args.limit)))
        elif args.command == "db":
            print(asyncio.run(_db(_settings(), args.action, getattr(args, "to", None))))
        elif args.command == "outbox":
            print(asyncio.run(_outbox(_settings(), args.action, getattr(args, "id", None),
                                      args.status, args.limit)))
        elif args.command == "stats":
            print(asyncio.run(_stats(_settings(), args.month, args.scope, args.json)))
        elif args.command == "export":
            print(asyncio.run(_export(_settings(), args.month, args.scope, args.format,
                                      args.out)))
        elif args.command == "poster":
            print(asyncio.run(_poster(_settings(), args.building, args.grid, args.renew,
                                      args.out)))
        elif args.command == "care":
            print(asyncio.run(_care(_settings(), args)))
        elif args.command == "webhook":
            asyncio.run(_webhook(_settings(), args.registry))
        else:
            asyncio.run(_run(_settings(), args.registry))
    except CliError as exc:
        print(f"gridbot: error: {exc}", file=sys.stderr)
        return 1
    except SchemaError as exc:
        print(f"gridbot: error: {exc}", file=sys.stderr)
        return 1
    except (OperationalError, ArgumentError, NoSuchModuleError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"gridbot: error: cannot use the database GRIDBOT_DATABASE_URL: {reason}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
