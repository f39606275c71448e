"""The `gridbot` command: run, demo, registry load."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from bot.clock import SystemClock
from bot.config import Settings


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
    from bot.registry import RegistryError, apply_registry, parse_registry
    from storage.db import create_schema, make_engine, make_sessionmaker

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text") from exc
    try:
        model = parse_registry(text)
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
               f"{report.roles} roles, {report.categories} categories")
    if report.deactivated:
        summary += f"; no longer in the file (kept for old cases): {', '.join(report.deactivated)}"
    return summary


async def _run(settings: Settings, registry: Path | None) -> None:
    from aiogram.exceptions import (
        ClientDecodeError,
        TelegramAPIError,
        TelegramNetworkError,
        TelegramUnauthorizedError,
    )
    from aiogram.utils.token import TokenValidationError, validate_token

    from bot.app import build_app, run_polling

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
    await run_polling(app)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gridbot", description="Gridbot: grid case handling "
                                     "in Telegram chats")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot with long polling")
    run.add_argument("--registry", type=Path, help="load this registry file before starting")
    sub.add_parser("demo", help="play one case end to end against a fake Bot API, offline")
    reg = sub.add_parser("registry", help="the organisation registry")
    reg_sub = reg.add_subparsers(dest="action", required=True)
    load = reg_sub.add_parser("load", help="load or update the registry from a YAML file")
    load.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    level = logging.WARNING if args.command == "demo" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    try:
        if args.command == "demo":
            from bot.demo import run_demo

            asyncio.run(run_demo(sys.stdout))
        elif args.command == "registry":
            print(asyncio.run(_load_registry(_settings(), args.file)))
        else:
            asyncio.run(_run(_settings(), args.registry))
    except CliError as exc:
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
