"""Helpers for end-to-end tests over HTTP: a generated district and a running bot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.app import App
from bot.telegram.fake import FIXED_DATE, chat_json
from storage.models import Case, Outbox

TOKEN = "123456:TEST-token-for-the-local-fake-api"


class Reader:
    """Reads the database another process writes (`gridbot run`), SQLite file or server, the
    way an operator's query would: plain reads, no write lock taken (unlike the app's engine,
    which begins every SQLite transaction IMMEDIATE), one connection kept between looks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._engine is None:
            self._engine = create_async_engine(self.url, hide_parameters=True)
        async with self._engine.connect() as conn:
            return [tuple(r) for r in (await conn.exec_driver_sql(sql)).all()]

    async def look(self, sql: str) -> list[tuple[Any, ...]]:
        """The statement's rows, or none while the process has not made the database or its
        tables yet."""
        # Connecting would create the SQLite file before the process it belongs to does.
        if self.url.startswith("sqlite") and not Path(make_url(self.url).database or "").exists():
            return []
        try:
            return await self.rows(sql)
        except DBAPIError:
            return []

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """One statement's rows, read past the ORM, on the database at `url`."""
    reader = Reader(url)
    try:
        return await reader.rows(sql)
    finally:
        await reader.close()


def district(grids: int) -> dict[str, Any]:
    """A registry with `grids` grids of one building each; ids derived from the index."""
    policy = {"verify_within": "2h", "remind_at": 0.75, "overdue_repeat": "4h",
              "escalate_after": "24h", "rating_within": "3d", "quiet_hours": None}
    return {
        "timezone": "Asia/Shanghai", "locale": "zh_CN", "policy": policy,
        "categories": [{"code": "other", "name": {"zh_CN": "其他", "en": "Other"},
                        "sla": "72h"}],
        "streets": [{"code": "S", "name": "测试街道", "supervisors": [{"id": 100, "name": "街道"}],
                     "communities": [{
                         "code": "C", "name": "测试社区",
                         "supervisors": [{"id": 200, "name": "社区"}],
                         "grids": [{
                             "code": f"G{i:02d}", "name": f"第{i}网格",
                             "leader": {"id": leader(i), "name": f"网格长{i}"},
                             "chat": work_chat(i),
                             "buildings": [{"code": f"G{i:02d}-B", "name": f"{i}号楼",
                                            "chat": building_chat(i),
                                            "head": {"id": head(i), "name": f"楼栋长{i}"}}],
                         } for i in range(grids)],
                     }]}],
    }


def leader(i: int) -> int:
    return 10_000 + i


def head(i: int) -> int:
    return 20_000 + i


def resident(i: int, n: int) -> int:
    return 1_000_000 + i * 1000 + n


def work_chat(i: int) -> int:
    return -1_000_000_000_000 - i


def building_chat(i: int) -> int:
    return -1_000_000_100_000 - i


def write_registry(path: Path, grids: int) -> Path:
    path.write_text(yaml.safe_dump(district(grids), allow_unicode=True), encoding="utf-8")
    return path


def album_part(chat_id: int, user_id: int, message_id: int, group: str, photo: str,
               caption: str | None) -> dict[str, Any]:
    """One photo of album `group` posted in a group; the first carries `/report …`."""
    msg: dict[str, Any] = {
        "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(chat_id),
        "from": {"id": user_id, "is_bot": False, "first_name": f"居民{user_id}"},
        "media_group_id": group,
        "photo": [{"file_id": photo, "file_unique_id": photo, "width": 1, "height": 1}],
    }
    if caption:
        msg["caption"] = caption
        msg["caption_entities"] = [{"type": "bot_command", "offset": 0, "length": 7}]
    return {"message": msg}


class ReportStream:
    """Group reports and three-photo albums pushed to a fake Bot API round the buildings of a
    `district(grids)`, counted: each report and each album is owed exactly one case."""

    def __init__(self, server: Any, grids: int) -> None:
        self.server, self.grids = server, grids
        self.reports = self.albums = 0
        self.message_id = 1000

    @property
    def cases(self) -> int:
        return self.reports + self.albums

    def push_reports(self, n: int) -> None:
        for _ in range(n):
            i = self.reports % self.grids
            self.message_id += 1
            self.server.push(report_update(building_chat(i), resident(i, self.reports),
                                           f"问题{self.reports}", self.message_id))
            self.reports += 1

    def push_album(self) -> None:
        a = self.albums
        for part in range(3):
            self.message_id += 1
            self.server.push(album_part(building_chat(a % self.grids), resident(9, a),
                                        self.message_id, f"album{a}", f"album{a}-p{part}",
                                        f"/report 相册{a}" if part == 0 else None))
        self.albums += 1


def report_update(chat_id: int, user_id: int, text: str, message_id: int) -> dict[str, Any]:
    command = "/report"
    return {"message": {
        "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(chat_id),
        "from": {"id": user_id, "is_bot": False, "first_name": f"居民{user_id}"},
        "text": f"{command} {text}",
        "entities": [{"type": "bot_command", "offset": 0, "length": len(command)}],
    }}


def callback_update(user_id: int, data: str, chat_id: int, message_id: int) -> dict[str, Any]:
    return {"callback_query": {
        "id": f"{user_id}-{data}", "from": {"id": user_id, "is_bot": False,
                                            "first_name": f"u{user_id}"},
        "chat_instance": "ci", "data": data,
        "message": {"message_id": message_id, "date": FIXED_DATE, "chat": chat_json(chat_id),
                    "text": "."},
    }}


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def count_cases(app: App, status: str | None = None) -> int:
    async with app.sessions() as db:
        q = select(func.count()).select_from(Case)
        if status is not None:
            q = q.where(Case.status == status)
        return int(await db.scalar(q) or 0)


async def outbox_settled(app: App) -> bool:
    async with app.sessions() as db:
        pending = await db.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.status == "pending"))
    return not pending


async def outbox_rows(app: App) -> list[Outbox]:
    async with app.sessions() as db:
        return list((await db.scalars(select(Outbox).order_by(Outbox.id))).all())
