"""/stats and /export in chat, through the real Dispatcher, the outbox and the fake Bot API:
who may ask for what, the figures' text, the chart and the ledger as uploads, and uploads
that fail, are retried, and carry long captions."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.app import build_app
from bot.cases.outbox import enqueue
from bot.cases.registry_edit import apply_registry
from bot.config import Settings
from bot.ledger import charts
from bot.org.registry import parse_registry
from bot.telegram.delivery import plan
from bot.telegram.ratelimit import Limits
from bot.texts import CAPTION_LIMIT
from storage.models import Outbox
from tests.e2e import TOKEN
from tests.fakeserver import FakeBotApi
from tests.figures_month import Month, fill_month
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    SAMPLE,
    STREET_SUP,
    Harness,
    fresh_database,
)

PNG = b"\x89PNG\r\n\x1a\n"
XLSX = b"PK\x03\x04"


@pytest.fixture
async def month(h: Harness) -> Month:
    async with h.app.sessions() as db:
        return await fill_month(db)


async def _rows(h: Harness) -> list[Outbox]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(Outbox).order_by(Outbox.id))).all())


def _only_file(h: Harness, chat: int) -> tuple[str, str, bytes]:
    files = h.api.files_to(chat)
    assert len(files) == 1, [f.file_name for f in files]
    sent = files[0]
    assert sent.file is not None and sent.file_kind is not None
    return sent.file_kind, sent.text, sent.file


async def _later(h: Harness) -> None:
    """A minute on, past the retry's backoff; only the outbox runs (no sweep, no digest)."""
    h.clock.advance(timedelta(minutes=1))
    await h.deliver()


# --- /stats ------------------------------------------------------------------------------


async def test_grid_leader_gets_figures_and_chart(h: Harness, month: Month) -> None:
    await h.private(LEADER, "/stats 2026-10")
    kind, caption, png = _only_file(h, LEADER)
    assert kind == "photo" and png.startswith(PNG) and len(png) > 10_000
    # GRID1_OCT of the generated month: 12 received, 10 due, 8 closed, 7 on time.
    assert "柏树郢第一网格" in caption and "2026-10" in caption
    assert "受理 12 件 · 应结案 10 件 · 结案 8 件" in caption
    assert "结案率 80.0% · 按期结案率 70.0%（按期 7，超期 1）" in caption
    assert "返工率 20.0%" in caption and "满意率 85.7%" in caption
    assert "待处置 5 件，其中超期 2 件" in caption
    assert "各网格" not in caption  # a grid has no panel below it
    # Sent once, and the outbox keeps no file.
    (row,) = [r for r in await _rows(h) if r.upload_kind]
    assert row.status == "sent" and row.upload is None and row.upload_kind == "photo"
    assert row.upload_name == "stats-BSY-01-2026-10.png"


async def test_community_supervisor_sees_each_grid(h: Harness, month: Month) -> None:
    await h.private(COMMUNITY_SUP, "/stats 2026-10")
    _, text, png = _only_file(h, COMMUNITY_SUP)
    assert png.startswith(PNG)
    assert "柏树郢社区" in text and "受理 17 件" in text
    assert "• 柏树郢第一网格：受理 12 · 结案率 80.0% · 按期 70.0%" in text
    assert "• 柏树郢第二网格：受理 5 · 结案率 80.0% · 按期 40.0%" in text
    # A street supervisor's panel is per community.
    await h.private(STREET_SUP, "/stats 2026-10")
    _, text, _ = _only_file(h, STREET_SUP)
    assert "莲花街道" in text and "各社区" in text and "• 柏树郢社区：受理 17" in text


async def test_scope_and_period_in_either_order(h: Harness, month: Month) -> None:
    await h.private(COMMUNITY_SUP, "/stats BSY-02 2026-10")
    await h.private(COMMUNITY_SUP, "/stats 2026-10 bsy-02")
    first, second = h.api.files_to(COMMUNITY_SUP)
    assert "柏树郢第二网格" in first.text and "受理 5 件" in first.text
    assert first.text == second.text
    # A building of the leader's grid, and a range of days.
    await h.private(LEADER, "/stats BSY-01-05 2026-10")
    assert "5号楼" in h.api.files_to(LEADER)[-1].text
    await h.private(LEADER, "/stats 2026-10-01..2026-10-02")
    assert "2026-10-01..2026-10-02" in h.api.files_to(LEADER)[-1].text


async def test_default_is_this_month_so_far_at_the_widest_node(h: Harness,
                                                                month: Month) -> None:
    await h.private(COMMUNITY_SUP, "/stats")
    text = h.api.files_to(COMMUNITY_SUP)[-1].text
    # The harness's clock: 2026-11-23 in Shanghai.
    assert "柏树郢社区" in text and "2026-11-01..2026-11-23" in text


async def test_scope_refusals(h: Harness, month: Month) -> None:
    await h.private(LEADER, "/stats BSY-02")
    assert "不在您的辖区内" in h.last(LEADER).text
    await h.private(LEADER, "/stats BSY")  # above their grid
    assert "不在您的辖区内" in h.last(LEADER).text
    await h.private(LEADER, "/stats NOPE-9")
    assert "没有编码为“NOPE-9”" in h.last(LEADER).text
    await h.private(LEADER, "/stats 2026-13")
    assert "看不懂时间“2026-13”" in h.last(LEADER).text
    await h.private(LEADER, "/stats 2026-10 2026-11")
    assert "用法" in h.last(LEADER).text
    assert h.api.files_to(LEADER) == []


async def test_residents_and_building_heads_are_refused(h: Harness, month: Month) -> None:
    for person in (RESIDENT, HEAD):
        await h.private(person, "/stats")
        assert "仅供网格长、网格员" in h.last(person).text
        assert h.api.files_to(person) == []
    # A grid member sees their grid.
    await h.private(MEMBER, "/stats 2026-10")
    assert "柏树郢第一网格" in h.api.files_to(MEMBER)[-1].text


async def test_in_a_group_only_a_pointer_to_the_private_chat(h: Harness,
                                                             month: Month) -> None:
    await h.say(BUILDING_CHAT, LEADER, "/stats 2026-10")
    await h.say(BUILDING_CHAT, COMMUNITY_SUP, "/export 2026-10")
    texts = h.texts(BUILDING_CHAT)
    assert len(texts) == 2 and all("请私聊机器人" in t for t in texts)
    assert not any("受理" in t for t in texts)
    assert h.api.files_to(BUILDING_CHAT) == [] and h.api.files_to(LEADER) == []


async def test_without_a_font_the_text_still_goes(h: Harness, month: Month,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def no_font(configured: object = None) -> Path:
        raise charts.NoFont("no font with Chinese glyphs")

    monkeypatch.setattr(charts, "find_font", no_font)
    await h.private(LEADER, "/stats 2026-10")
    assert h.api.files_to(LEADER) == []
    text = h.last(LEADER).text
    assert "受理 12 件" in text and "图表暂时无法生成" in text
    assert "chart is skipped" in caplog.text


async def test_says_when_the_calendar_does_not_know_a_year(h: Harness) -> None:
    """Working-day SLAs in a year with no holiday schedule: /stats says their deadlines
    count weekends only; with clock-time SLAs alone it has nothing to say. (In 2030: a
    period not yet begun is refused.)"""
    h.clock.advance(datetime(2030, 11, 2, tzinfo=UTC) - h.clock.now())
    await h.private(LEADER, "/stats 2030-10")
    assert "工作日历尚无" not in h.api.files_to(LEADER)[-1].text
    registry = SAMPLE.read_text("utf-8").replace(
        "name: {zh_CN: 市政设施, en: Public facilities},   sla: 72h}",
        "name: {zh_CN: 市政设施, en: Public facilities},   sla: 3wd}")
    assert "sla: 3wd" in registry
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(registry), h.clock)
    await h.private(LEADER, "/stats 2030-10")
    assert "工作日历尚无 2030 年的节假日安排" in h.api.files_to(LEADER)[-1].text
    await h.private(LEADER, "/stats 2026-10")  # the official schedule has 2026 (and 2025)
    assert "工作日历尚无" not in h.api.files_to(LEADER)[-1].text


# --- the upload through the outbox ------------------------------------------------------


async def test_failed_upload_is_retried(h: Harness, month: Month) -> None:
    h.api.fail_next(LEADER, 500, "Internal Server Error")
    await h.private(LEADER, "/stats 2026-10")
    assert h.api.files_to(LEADER) == []
    (row,) = [r for r in await _rows(h) if r.upload_kind]
    assert row.status == "pending" and row.upload is not None and row.attempts == 1
    await _later(h)
    kind, caption, png = _only_file(h, LEADER)
    assert kind == "photo" and png.startswith(PNG) and "受理 12 件" in caption
    (row,) = [r for r in await _rows(h) if r.upload_kind]
    assert row.status == "sent" and row.upload is None


async def test_long_caption_follows_as_text_and_is_resumed(h: Harness) -> None:
    text = "统计\n" + "\n".join(f"第{i}行 受理 {i} 件" for i in range(200))
    assert len(text) > CAPTION_LIMIT
    async with h.app.sessions() as db:
        await enqueue(db, "t:long", LEADER, text, h.clock.now(), upload=PNG + b"x",
                      upload_name="c.png", upload_kind="photo")
        await db.commit()
    # The photo goes; the text after it fails once, and only the text is sent again.
    h.api.fail_next_call("sendMessage", 500, "Internal Server Error")
    await h.deliver()
    (row,) = await _rows(h)
    assert [p.kind for p in plan(row)] == ["upload", "text"] and row.parts_done == 1
    assert row.upload is not None  # kept until the whole row is sent
    await _later(h)
    sent = h.api.to(LEADER)
    assert [s.file_kind for s in sent] == ["photo", None]
    assert sent[0].text == "" and sent[1].text == text
    (row,) = await _rows(h)
    assert row.status == "sent" and row.upload is None


async def test_refused_file_sends_the_text_alone(h: Harness) -> None:
    async with h.app.sessions() as db:
        await enqueue(db, "t:bad", LEADER, "统计", h.clock.now(), upload=b"not a png",
                      upload_name="c.png", upload_kind="photo")
        await db.commit()
    h.api.fail_next(LEADER, 400, "Bad Request: IMAGE_PROCESS_FAILED")
    await h.deliver()
    assert h.texts(LEADER) == ["统计"] and h.api.files_to(LEADER) == []
    (row,) = await _rows(h)
    assert row.status == "sent" and row.upload is None


async def test_upload_goes_as_multipart_over_http(tmp_path: Path) -> None:
    """The real aiohttp session sends the bytes in a multipart body, the caption beside."""
    server = FakeBotApi(enforce_limits=False)
    url = await server.start()
    settings = Settings(database_url=await fresh_database(tmp_path, "http.db"), api_url=url,
                        bot_token=SecretStr(TOKEN), _env_file=None)
    app = await build_app(settings, limits=Limits.unlimited())
    try:
        async with app.sessions() as db:
            await enqueue(db, "t:photo", 4242, "图表", app.ctx.clock.now(),
                          upload=PNG + b"chart", upload_name="stats.png", upload_kind="photo")
            await enqueue(db, "t:doc", 4242, "台账", app.ctx.clock.now(),
                          upload=XLSX + b"book", upload_name="台账-BSY-2026-10.xlsx",
                          upload_kind="document")
            await db.commit()
        for _ in range(20):
            if not await app.delivery.flush():
                break
        got = [(r.method, r.text, r.file_name, r.file) for r in server.to(4242)]
        assert got == [("sendphoto", "图表", "stats.png", PNG + b"chart"),
                       ("senddocument", "台账", "台账-BSY-2026-10.xlsx", XLSX + b"book")]
    finally:
        await app.close()
        await server.stop()


# --- /export -----------------------------------------------------------------------------


async def test_export_gives_the_ledger(h: Harness, month: Month) -> None:
    await h.private(COMMUNITY_SUP, "/export 2026-10")
    (sent,) = h.api.files_to(COMMUNITY_SUP)
    assert sent.file_kind == "document" and sent.file_name == "台账-BSY-2026-10.xlsx"
    assert sent.file is not None and sent.file.startswith(XLSX)
    book = openpyxl.load_workbook(io.BytesIO(sent.file), read_only=True)
    sheet = book.worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    numbers = {r[0] for r in rows[1:]}
    # 不予受理 (c12) counts nowhere.
    assert f"#{month.ids['c1']}" in numbers and f"#{month.ids['c12']}" not in numbers
    assert f"共 {len(rows) - 1} 件" in sent.text
    (row,) = [r for r in await _rows(h) if r.upload_kind]
    assert row.status == "sent" and row.upload is None


async def test_export_csv_and_a_grid(h: Harness, month: Month) -> None:
    await h.private(COMMUNITY_SUP, "/export csv 2026-10 BSY-02")
    (sent,) = h.api.files_to(COMMUNITY_SUP)
    assert sent.file_name == "台账-BSY-02-2026-10.csv"
    assert sent.file is not None and sent.file.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    rows = list(csv.reader(io.StringIO(sent.file.decode("utf-8-sig"))))
    assert len(rows) > 1 and f"共 {len(rows) - 1} 件" in sent.text
    # A grid leader exports their own grid (the default), not another.
    await h.private(LEADER2, "/export 2026-10")
    assert h.api.files_to(LEADER2)[-1].file_name == "台账-BSY-02-2026-10.xlsx"
    await h.private(LEADER2, "/export 2026-10 BSY-01")
    assert "不在您的辖区内" in h.last(LEADER2).text


async def test_export_refused_to_others(h: Harness, month: Month) -> None:
    for person in (MEMBER, HEAD, RESIDENT):
        await h.private(person, "/export 2026-10")
        assert "台账导出仅供" in h.last(person).text
        assert h.api.files_to(person) == []
