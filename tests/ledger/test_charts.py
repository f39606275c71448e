"""The /stats chart: Chinese labels render with real glyphs, and the PNG is a picture."""

from __future__ import annotations

import io
import logging
import struct
import warnings
from pathlib import Path

import pytest
import yaml

from bot.ledger import charts
from tests.harness import SAMPLE

# Every word the chart of the sample registry may show, and the figures' names.
KNOWN = "受理数 结案率 按期结案率 满意率 返工率 办结率 待处置 超期 每日受理与结案 各网格 各社区"


def _registry_names() -> str:
    """The category, street, community, grid and building names of the example registry."""
    data = yaml.safe_load(SAMPLE.read_text("utf-8"))
    names = [c["name"]["zh_CN"] for c in data["categories"]]

    def walk(nodes: list[dict[str, object]]) -> None:
        for node in nodes:
            if "name" in node:
                names.append(str(node["name"]))
            for value in node.values():
                if isinstance(value, list) and value and isinstance(value[0], dict) \
                        and "code" in value[0]:
                    walk(value)

    walk(data["streets"])
    return " ".join(names)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _labels() -> charts.Labels:
    return charts.Labels(received="受理数", closed="结案数", on_time_share="当日按期结案占比",
                         on_time_rate="按期结案率", count="件数", by_day="每日受理与结案",
                         by_child="各网格")


def test_font_covers_the_registry_and_the_figures() -> None:
    text = KNOWN + _registry_names()
    assert "柏树郢第一网格" in text and "流动人口与出租房" in text
    font = charts.find_font(None)
    assert charts.covers(font, text) == set()


def test_chinese_renders_without_missing_glyphs() -> None:
    font = charts.find_font(None)
    names = _registry_names().split()
    days = charts.series([f"10-{d}" for d in range(1, 32)], [d % 4 for d in range(31)],
                         [d % 3 for d in range(31)], [d % 2 for d in range(31)])
    grids = charts.Series(tuple(names[:6]), (5, 3, 0, 2, 1, 4), (4, 3, 0, 1, 0, 4),
                          (0.75, 1.0, None, 0.5, 0.0, 1.0))
    with warnings.catch_warnings():
        # matplotlib warns "Glyph … missing from font(s) …" for every box it draws.
        warnings.simplefilter("error")
        png = charts.render("柏树郢社区 2026-10 " + KNOWN, days, _labels(), font, grids)
    width, height = _png_size(png)
    assert (width, height) == (800, 760)
    assert len(png) > 10_000


def test_default_font_draws_boxes() -> None:
    """The check above can fail: matplotlib's own font has no Chinese glyph, and says so."""
    from matplotlib import font_manager

    dejavu = Path(font_manager.findfont("DejaVu Sans"))
    assert charts.covers(dejavu, "受理") == {"受", "理"}
    days = charts.series(["1"], [1], [1], [1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        charts.render("受理", days, _labels(), dejavu)
    assert any("missing from font" in str(w.message) for w in caught)


def test_configured_font_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    packaged = charts.find_font(None)
    assert charts.find_font(packaged) == packaged
    # A file that is not a font, or lacks the glyphs: said in the log, and the next one used.
    bogus = tmp_path / "bogus.ttf"
    bogus.write_bytes(b"not a font")
    with caplog.at_level(logging.WARNING, logger="bot.ledger.charts"):
        assert charts.find_font(bogus) == packaged
    assert "GRIDBOT_CHART_FONT" in caplog.text and "bogus.ttf" in caplog.text


def test_no_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(charts, "_packaged", lambda: None)
    monkeypatch.setattr(charts, "_system", lambda: None)
    charts.find_font.cache_clear()
    try:
        with pytest.raises(charts.NoFont, match="GRIDBOT_CHART_FONT"):
            charts.find_font(tmp_path / "missing.otf")
    finally:
        charts.find_font.cache_clear()


def test_single_panel_png_decodes() -> None:
    font = charts.find_font(None)
    days = charts.series(["11-1", "11-2"], [0, 0], [0, 0], [0, 0])
    png = charts.render("柏树郢第一网格 2026-11-01..2026-11-02", days, _labels(), font)
    assert _png_size(png) == (800, 420)
    # A decoder reads it back: matplotlib's own PNG reader.
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (420, 800)
