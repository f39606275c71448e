"""The framework floor: a bare aiogram bot that answers each update with one message.

It does nothing Gridbot does (no database, no pacing, no templates): what is left is the
cost of aiogram itself — reading the update, routing it, one Bot API call. bench.intake runs
it beside `gridbot run` / `gridbot webhook` against the same fake Bot API.

    python3 -m bench.floor_bot --api http://127.0.0.1:PORT --token T            # polling
    python3 -m bench.floor_bot --api … --token T --listen 127.0.0.1:8090 \\
        --path /tg --secret S                                                  # webhook

A message is answered with a reply to it in its chat; a button press with a message
``cb:<callback query id>`` in the chat of the message the button was on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import CallbackQuery, Message, ReplyParameters
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

router = Router()


@router.message()
async def on_message(message: Message, bot: Bot) -> None:
    await bot.send_message(message.chat.id, "ok",
                           reply_parameters=ReplyParameters(message_id=message.message_id))


@router.callback_query()
async def on_press(query: CallbackQuery, bot: Bot) -> None:
    chat = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat, f"cb:{query.id}")


def make(api: str, token: str) -> tuple[Bot, Dispatcher]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api.rstrip("/")))
    bot = Bot(token, session=session)
    dp = Dispatcher()
    dp.include_router(router)
    return bot, dp


async def serve_webhook(bot: Bot, dp: Dispatcher, listen: str, path: str, secret: str) -> None:
    app = web.Application()
    SimpleRequestHandler(dispatcher=dp, bot=bot, secret_token=secret).register(app, path=path)
    setup_application(app, dp, bot=bot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", required=True, help="Bot API base URL")
    ap.add_argument("--token", required=True)
    ap.add_argument("--listen", default=None, help="host:port: webhook mode")
    ap.add_argument("--path", default="/tg")
    ap.add_argument("--secret", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    bot, dp = make(args.api, args.token)
    if args.listen:
        asyncio.run(serve_webhook(bot, dp, args.listen, args.path, args.secret or ""))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(dp.start_polling(bot, handle_signals=True, polling_timeout=2))


if __name__ == "__main__":
    main()
