"""`gridbot webhook` over real HTTP: updates posted with and without the secret, stored in the
inbox and answered at once, handled once by the same processor as polling; `/healthz`.

In-process tests run the real server (`run_webhook`) on a local port with the fake Bot API
session and a manual clock; one test starts the real `gridbot webhook` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiogram.methods import DeleteWebhook, SetWebhook
from pydantic import SecretStr
from sqlalchemy import select

from bot.app import run_webhook
from bot.cli import main
from storage.models import InboxUpdate
from tests.e2e import TOKEN, building_chat, report_update, resident, wait_for, write_registry
from tests.fakeserver import FakeBotApi
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    RESIDENT,
    Harness,
    isolate_env,
    make_harness,
    server_database,
)

SECRET = "s3cret-Token_for_tests"
HOOK = "/telegram/hook"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A running webhook worker and an HTTP client for it."""

    def __init__(self, h: Harness, base: str, http: aiohttp.ClientSession,
                 task: asyncio.Task[None]) -> None:
        self.h, self.base, self.http, self.task = h, base, http, task

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        async with self.http.post(self.base + HOOK, json=update, headers=headers) as r:
            return r.status

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.base + path) as r:
            return r.status, await r.text()

    async def up(self) -> bool:
        if self.task.done():
            self.task.result()  # raise what ended it
        try:
            await self.get("/healthz")
            return True
        except aiohttp.ClientConnectionError:
            return False

    async def healthy(self) -> bool:
        return (await self.get("/healthz"))[0] == 200

    async def inbox(self) -> list[tuple[int | None, str]]:
        async with self.h.app.sessions() as db:
            return [(r.update_id, r.status) for r in (await db.execute(
                select(InboxUpdate.update_id, InboxUpdate.status)
                .order_by(InboxUpdate.id))).all()]

    async def case_count(self) -> int:
        return len(await self.h.cases())


@asynccontextmanager
async def served(tmp_path: Path, *, sweep_seconds: float = 3600,
                 before: Callable[[Harness], None] | None = None) -> AsyncIterator[Served]:
    h = await make_harness(tmp_path)
    port = free_port()
    h.app.settings = h.app.settings.model_copy(update={
        "webhook_url": f"https://bot.example.org{HOOK}",
        "webhook_secret": SecretStr(SECRET), "listen": f"127.0.0.1:{port}",
        "sweep_seconds": sweep_seconds})
    if before is not None:
        before(h)
    stop = asyncio.Event()
    task = asyncio.create_task(run_webhook(h.app, stop))
    try:
        async with aiohttp.ClientSession() as http:
            s = Served(h, f"http://127.0.0.1:{port}", http, task)
            await wait_for(s.up, 15, "the webhook server")
            yield s
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def report(h: Harness, text: str = "/report 楼道灯坏了") -> dict[str, Any]:
    return h.updates.message(BUILDING_CHAT, RESIDENT, text)


async def test_registers_webhook_with_secret_and_used_update_types(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        calls = s.h.api.calls_of(SetWebhook)
        assert len(calls) == 1
        call = calls[0]
        assert call.url == f"https://bot.example.org{HOOK}"
        assert call.secret_token == SECRET
        assert call.allowed_updates == s.h.app.dp.resolve_used_update_types()
        assert "message" in call.allowed_updates and "callback_query" in call.allowed_updates
        # A webhook worker must not remove the webhook the other workers serve.
        assert s.h.api.calls_of(DeleteWebhook) == []


async def test_without_the_secret_401_and_nothing_stored(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        update = report(s.h)
        assert await s.post(update, secret=None) == 401
        assert await s.post(update, secret="wrong") == 401
        assert await s.post(update, secret=SECRET + "x") == 401
        assert await s.post(update, secret="") == 401
        async with s.http.post(s.base + HOOK, data=json.dumps(update),
                               headers={"X-Telegram-Bot-Api-Secret-Token": "秘密"}) as r:
            assert r.status == 401  # not a 500 from comparing non-ASCII text
        await asyncio.sleep(0.5)
        assert await s.inbox() == []
        assert await s.case_count() == 0
        assert s.h.api.sent == []


async def test_report_is_stored_answered_and_handled_once(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        update = report(s.h)
        assert await s.post(update) == 200
        await wait_for(lambda: _has_case(s), 10, "the case")
        await wait_for(lambda: _told(s, HEAD), 10, "the building head's card")
        cards = len(s.h.api.to(HEAD))
        # Telegram delivers the same update again (it missed our answer): handled once.
        for _ in range(3):
            assert await s.post(update) == 200
        await asyncio.sleep(1.5)
        assert await s.case_count() == 1
        assert len(s.h.api.to(HEAD)) == cards
        assert await s.inbox() == [(update["update_id"], "done")]


async def test_group_chatter_is_recorded_without_its_text(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        chatter = s.h.updates.message(BUILDING_CHAT, RESIDENT, "今天天气不错")
        assert await s.post(chatter) == 200
        async with s.h.app.sessions() as db:
            row = await db.scalar(select(InboxUpdate))
        assert row is not None and row.status == "skipped" and row.payload is None


async def test_unreadable_body_is_refused_and_unreadable_update_set_aside(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        async with s.http.post(s.base + HOOK, data=b"{not json",
                               headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
            assert r.status == 400
        assert await s.inbox() == []
        odd = {"update_id": 77, "message": {"message_id": "x", "chat": 5}}
        assert await s.post(odd) == 200
        await wait_for(lambda: _inbox_is(s, [(77, "set_aside")]), 5, "the update set aside")


@pytest.mark.skipif(server_database() is None,
                    reason="SQLite has one writer: a handler's open transaction holds it, and "
                           "the update waits for it (README: use PostgreSQL for webhooks)")
async def test_slow_handler_does_not_delay_the_answer(tmp_path: Path) -> None:
    handled: list[float] = []

    def slow(h: Harness) -> None:
        async def middleware(handler: Any, event: Any, data: dict[str, Any]) -> Any:
            await asyncio.sleep(3)  # inside the handler's transaction, like a slow Bot API call
            result = await handler(event, data)
            handled.append(time.monotonic())
            return result
        h.app.dp.message.middleware(middleware)

    async with served(tmp_path, before=slow) as s:
        first, second = report(s.h), report(s.h, "/report 电梯坏了")
        started = time.monotonic()
        assert await s.post(first) == 200
        assert await s.post(second) == 200
        answered = time.monotonic() - started
        assert answered < 1.0, answered
        await wait_for(lambda: _cases_are(s, 2), 15, "both cases")
        assert handled and handled[0] - started >= 3


async def test_healthz_ok_then_503_with_the_reason(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        await wait_for(s.healthy, 10, "healthy")
        assert await s.get("/healthz") == (200, "ok\n")
        # The sweep last ran (on the manual clock) four hours ago: 3 × 3600 s + 60 s is over.
        s.h.clock.advance(timedelta(hours=4))
        await asyncio.sleep(1.5)  # the sender passes again on the new time; the sweep does not
        status, text = await s.get("/healthz")
        assert status == 503
        assert text.startswith("sweep: last ran 14400s ago"), text


@pytest.mark.skipif(server_database() is not None, reason="removes the SQLite database file")
async def test_healthz_503_when_the_database_is_gone(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        await wait_for(s.healthy, 10, "healthy")
        db = tmp_path / "t.db"
        await s.h.app.engine.dispose()
        db.rename(tmp_path / "moved.db")
        db.mkdir()  # where the database was, nothing SQLite can open
        try:
            status, text = await s.get("/healthz")
            assert status == 503
            assert text.startswith("database: OperationalError"), text
            # The webhook cannot store the update: Telegram is told to deliver it again.
            assert await s.post(report(s.h)) == 503
        finally:
            await s.h.app.engine.dispose()
            db.rmdir()
            (tmp_path / "moved.db").rename(db)
        await wait_for(s.healthy, 10, "healthy again")


async def _has_case(s: Served) -> bool:
    return await s.case_count() >= 1


async def _cases_are(s: Served, n: int) -> bool:
    return await s.case_count() == n


async def _told(s: Served, chat: int) -> bool:
    return bool(s.h.api.to(chat))


async def _inbox_is(s: Served, rows: list[tuple[int | None, str]]) -> bool:
    return await s.inbox() == rows


# --- the real command ------------------------------------------------------------------------


@pytest.mark.slow
async def test_gridbot_webhook_process_end_to_end(tmp_path: Path) -> None:
    """The real `gridbot webhook`: setWebhook on the fake Bot API, a report posted twice made
    one case and one reply, /healthz and /metrics, JSON logs without what people wrote, and
    SIGTERM ends it cleanly."""
    api = FakeBotApi(enforce_limits=False)
    url = await api.start()
    port = free_port()
    registry = write_registry(tmp_path / "district.yaml", 1)
    db = tmp_path / "hook.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDBOT_")}
    env.update({"GRIDBOT_BOT_TOKEN": TOKEN, "GRIDBOT_API_URL": url,
                "GRIDBOT_DATABASE_URL": server_database() or f"sqlite+aiosqlite:///{db}",
                "GRIDBOT_WEBHOOK_URL": "https://bot.example.org/tg",
                "GRIDBOT_WEBHOOK_SECRET": SECRET, "GRIDBOT_LISTEN": f"127.0.0.1:{port}",
                "GRIDBOT_SWEEP_SECONDS": "1", "GRIDBOT_LOG_FORMAT": "json",
                "PYTHONPATH": str(ROOT)})
    if server_database():
        from tests.harness import fresh_database
        await fresh_database(tmp_path, "unused.db")
    log = tmp_path / "bot.log"
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "webhook", "--registry", str(registry),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                assert proc.returncode is None, log.read_text()
                try:
                    async with http.get(base + "/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_for(healthy, 30, "a healthy webhook worker")
            hooks = [p for m, p in api.calls if m == "setwebhook"]
            assert len(hooks) == 1
            assert hooks[0]["url"] == "https://bot.example.org/tg"
            assert hooks[0]["secret_token"] == SECRET
            assert "message" in hooks[0]["allowed_updates"]
            update = {"update_id": 500, **report_update(building_chat(0), resident(0, 1),
                                                        "三楼漏水很严重", 9)}
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with http.post(base + "/tg", json=update) as r:
                assert r.status == 401
            for _ in range(2):
                async with http.post(base + "/tg", json=update, headers=headers) as r:
                    assert r.status == 200

            async def replied() -> bool:
                return bool(api.to(building_chat(0)))

            await wait_for(replied, 20, "the reply in the building chat")
            await asyncio.sleep(2)
            assert len(api.to(building_chat(0))) == 1
            async with http.get(base + "/metrics") as r:
                metrics = await r.text()
            assert 'gridbot_updates_received_total{kind="message"} 2.0' in metrics
            assert 'gridbot_updates_handled_total{kind="message"} 1.0' in metrics
            assert 'gridbot_cases{level="grid",status="verifying"} 1.0' in metrics
        assert proc.returncode is None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await api.stop()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("webhook listening" in r["message"] for r in records)
    assert not any("三楼漏水" in line or str(resident(0, 1)) in line for line in lines)


def test_gridbot_webhook_refuses_missing_settings(tmp_path: Path, monkeypatch: Any,
                                                  capsys: Any) -> None:
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)

    def run(**more: str) -> tuple[int, str]:
        for name, value in more.items():
            monkeypatch.setenv(name, value)
        code = main(["webhook"])
        return code, capsys.readouterr().err

    code, err = run()
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_WEBHOOK_URL is not set")
    code, err = run(GRIDBOT_WEBHOOK_URL="http://bot.example.org/tg")
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_WEBHOOK_URL: ")
    assert "https" in err and len(err.strip().splitlines()) == 1
    code, err = run(GRIDBOT_WEBHOOK_URL="https://bot.example.org/tg")
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_WEBHOOK_SECRET is not set")
    code, err = run(GRIDBOT_WEBHOOK_SECRET="has spaces")
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_WEBHOOK_SECRET: ")
    code, err = run(GRIDBOT_WEBHOOK_SECRET=SECRET, GRIDBOT_LISTEN="8080")
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_LISTEN: ")
    code, err = run(GRIDBOT_LISTEN="127.0.0.1:8080", GRIDBOT_LOG_FORMAT="xml")
    assert code == 1 and err.startswith("gridbot: error: GRIDBOT_LOG_FORMAT: ")
    code, err = run(GRIDBOT_LOG_FORMAT="json", GRIDBOT_WEBHOOK_URL="https://b.example.org/metrics")
    assert code == 1 and "/healthz or /metrics" in err
