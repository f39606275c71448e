"""`/metrics`: Prometheus text from a real webhook worker, counted where things happen and
read from the database at scrape time; JSON log lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

from bot.app import build_app, run_polling
from bot.cases.registry_edit import apply_registry
from bot.config import Settings
from bot.logs import JsonFormatter
from bot.ops.metrics import Metrics
from bot.org.registry import parse_registry
from storage.db import make_engine, make_sessionmaker
from storage.models import Case, InboxUpdate, Outbox
from tests.e2e import (
    TOKEN,
    building_chat,
    report_update,
    resident,
    wait_for,
    write_registry,
)
from tests.fakeserver import FakeBotApi
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    RESIDENT,
    Harness,
    fresh_database,
    make_harness,
)
from tests.telegram.test_webhook import Served, free_port, served

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def scrape(s: Served) -> Samples:
    async with s.http.get(s.base + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await r.text())


def failing_on_boom(h: Harness) -> None:
    async def middleware(handler: Any, event: Any, data: dict[str, Any]) -> Any:
        if "炸" in (getattr(event, "text", None) or ""):
            raise RuntimeError("a handler bug")
        return await handler(event, data)
    h.app.dp.message.middleware(middleware)


async def test_counters_of_a_worker(tmp_path: Path) -> None:
    async with served(tmp_path, before=failing_on_boom) as s:
        h = s.h
        # Telegram answers the reply in the building chat 429 once.
        h.api.fail_next(BUILDING_CHAT, 429, "Too Many Requests: retry after 1", retry_after=1)
        assert await s.post(h.updates.message(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")) == 200
        assert await s.post(h.updates.message(RESIDENT, RESIDENT, "/report 炸")) == 200
        assert await s.post({"update_id": 9_000, "callback_query": {"id": "1"}}) == 200

        async def settled() -> bool:
            async with h.app.sessions() as db:
                rows = (await db.execute(InboxUpdate.__table__.select())).all()
            return len(rows) == 3 and all(r.status != "new" for r in rows)

        await wait_for(settled, 15, "the updates handled or given up")
        await wait_for(lambda: _has(h, HEAD), 10, "the building head's card")
        m = await scrape(s)
        # The worker's first sweep runs beside the updates: on a loaded machine it may end
        # after they are handled.
        for _ in range(100):
            if value(m, "gridbot_sweep_duration_seconds_count"):
                break
            await asyncio.sleep(0.1)
            m = await scrape(s)
    assert value(m, "gridbot_updates_received_total", kind="message") == 2
    assert value(m, "gridbot_updates_received_total", kind="callback_query") == 1
    assert value(m, "gridbot_updates_handled_total", kind="message") == 1
    # The broken handler was tried three times, then its update marked failed.
    assert value(m, "gridbot_handler_failures_total", kind="message") == 3
    assert value(m, "gridbot_telegram_429_total") == 1
    assert total(m, "gridbot_deliveries_total", result="rate_limited") == 1
    assert total(m, "gridbot_deliveries_total", result="sent") >= 1
    assert value(m, "gridbot_sweep_duration_seconds_count") == 1
    assert value(m, "gridbot_database_up") == 1
    assert value(m, "gridbot_cases", status="verifying", level="grid") == 1
    for status in ("pending", "held", "failed", "undeliverable"):
        assert value(m, "gridbot_outbox_rows", status=status) is not None
    assert value(m, "gridbot_outbox_oldest_pending_age_seconds") is not None
    assert value(m, "gridbot_inbox_oldest_unhandled_age_seconds") == 0


async def _has(h: Harness, chat: int) -> bool:
    return bool(h.api.to(chat))


async def test_database_figures_read_at_scrape_time(tmp_path: Path) -> None:
    h = await make_harness(tmp_path)
    try:
        await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
        await h.say(BUILDING_CHAT, RESIDENT, "/report 电梯坏了")
        now = h.clock.now()
        async with h.app.sessions() as db:
            await db.execute(update(Case).where(Case.id == 2)
                             .values(status="open", level="community"))
            outbox = [Outbox(dedupe_key=f"t:{i}", chat_id=HEAD, text=".", status=status,
                             not_before=now - age, created_at=now - age)
                      for i, (status, age) in enumerate([
                          ("pending", timedelta(minutes=10)), ("pending", timedelta(minutes=1)),
                          ("pending", timedelta(minutes=-30)),  # quiet hours: not due yet
                          ("held", timedelta(hours=5)), ("failed", timedelta(days=2)),
                          ("failed", timedelta(days=1))])]
            db.add_all(outbox)
            db.add(InboxUpdate(update_id=1234, kind="message", payload={"update_id": 1234},
                               status="new", attempts=0, received_at=now - timedelta(seconds=95)))
            await db.commit()
        metrics = Metrics()
        await metrics.refresh(h.app.sessions, now)
        m = parse(metrics.render().decode())
        assert value(m, "gridbot_cases", status="verifying", level="grid") == 1
        assert value(m, "gridbot_cases", status="open", level="community") == 1
        assert value(m, "gridbot_outbox_rows", status="held") == 1
        assert value(m, "gridbot_outbox_rows", status="failed") == 2
        assert value(m, "gridbot_outbox_rows", status="undeliverable") == 0
        assert value(m, "gridbot_outbox_oldest_pending_age_seconds") == 600
        assert value(m, "gridbot_inbox_oldest_unhandled_age_seconds") == 95

        # A case that changes status leaves no stale series behind.
        async with h.app.sessions() as db:
            await db.execute(update(Case).where(Case.id == 2).values(status="closed"))
            await db.commit()
        await metrics.refresh(h.app.sessions, now)
        m = parse(metrics.render().decode())
        assert value(m, "gridbot_cases", status="open", level="community") is None
        assert value(m, "gridbot_cases", status="closed", level="community") == 1

        # The database is gone: counters still served, its figures left out.
        broken = Metrics()
        gone = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
        await broken.refresh(make_sessionmaker(gone), now)
        await gone.dispose()
        m = parse(broken.render().decode())
        assert value(m, "gridbot_database_up") == 0
        assert math.isnan(value(m, "gridbot_outbox_oldest_pending_age_seconds") or 0)
        assert value(m, "gridbot_outbox_rows", status="pending") is None
        assert value(m, "gridbot_telegram_429_total") == 0
    finally:
        await h.app.close()


def test_json_log_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gridbot.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outbox %s: 网络 %s", 7, "失败")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("sweep failed for case #%s", 3)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a traceback stays inside its line
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "outbox 7: 网络 失败" and first["level"] == "WARNING"
    assert first["logger"] == "gridbot.test_json" and first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


async def test_gridbot_run_serves_health_and_metrics_when_listen_is_set(tmp_path: Path) -> None:
    """Polling workers are watched the same way: GRIDBOT_LISTEN turns the server on."""
    server = FakeBotApi()
    api = await server.start()
    port = free_port()
    settings = Settings(database_url=await fresh_database(tmp_path, "run.db"), api_url=api,
                        bot_token=SecretStr(TOKEN), listen=f"127.0.0.1:{port}",
                        _env_file=None)  # type: ignore[call-arg]
    app = await build_app(settings)
    async with app.sessions() as db:
        registry = write_registry(tmp_path / "district.yaml", 1)
        await apply_registry(db, parse_registry(registry.read_text("utf-8")), app.ctx.clock)
    stop = asyncio.Event()
    task = asyncio.create_task(run_polling(app, stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def handled() -> bool:
                if task.done():
                    task.result()
                try:
                    async with http.get(base + "/metrics") as r:
                        m = parse(await r.text())
                except aiohttp.ClientConnectionError:
                    return False
                return value(m, "gridbot_updates_handled_total", kind="message") == 1

            server.push(report_update(building_chat(0), resident(0, 0), "楼道灯坏了", 100))
            await wait_for(handled, 20, "the polled report counted as handled")
            async with http.get(base + "/metrics") as r:
                m = parse(await r.text())
            assert value(m, "gridbot_updates_received_total", kind="message") == 1
            assert value(m, "gridbot_cases", status="verifying", level="grid") == 1

            async def healthy() -> bool:
                async with http.get(base + "/healthz") as r:
                    return r.status == 200 and await r.text() == "ok\n"

            await wait_for(healthy, 10, "healthy")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await server.stop()
    # Without GRIDBOT_LISTEN a polling worker opens no port (the README's first command).
    assert "listen" not in Settings(_env_file=None).model_fields_set  # type: ignore[call-arg]
