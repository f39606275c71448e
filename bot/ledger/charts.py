"""The chart of /stats: received and closed per day, the on-time share, and a panel per grid
(or community), as PNG bytes.

matplotlib with the Agg backend, through `Figure` objects and never pyplot (no global figure
state, no GUI). Chinese labels need a font with Chinese glyphs; matplotlib's own DejaVu has
none and draws boxes (with a "Glyph … missing from font(s)" warning). The font is, in order:
GRIDBOT_CHART_FONT (a font file), the Noto Sans CJK SC file the `mplfonts` package ships, or a
CJK font matplotlib finds on the system. Without one the chart is skipped, with an error in
the log, and /stats sends its text alone.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Characters every chart has (its labels, digits); a font that lacks one of them is no use.
PROBE = "受理结案按期率满意网格社区街道0123456789%-"
# The file of the mplfonts package, and what to look for among the system's fonts.
PACKAGED = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")
SYSTEM_NAMES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Sarasa Gothic SC", "Microsoft YaHei",
    "PingFang SC", "SimHei", "Noto Serif CJK SC", "AR PL UMing CN",
)
DPI = 100
SIZE = (8.0, 4.2)  # inches: 800 × 420 pixels at DPI; one more panel adds PANEL_HEIGHT
PANEL_HEIGHT = 3.4
RECEIVED_COLOR = "#7aa6d8"
CLOSED_COLOR = "#2e6f40"
ON_TIME_COLOR = "#d9822b"
# matplotlib's font cache and FT2Font objects are not thread-safe: one chart at a time.
_LOCK = threading.Lock()


class NoFont(RuntimeError):
    """No font with Chinese glyphs: the chart cannot be drawn legibly."""


@dataclass(frozen=True)
class Series:
    """Per day (or per grid): received, closed, and the on-time share of the closed (None
    when nothing was closed)."""

    labels: tuple[str, ...]
    received: tuple[int, ...]
    closed: tuple[int, ...]
    on_time: tuple[float | None, ...]


@dataclass(frozen=True)
class Labels:
    """The words on the chart, in the registry's locale (templates' labels_stats.j2)."""

    received: str
    closed: str
    on_time_share: str  # per day: closed on time ÷ closed that day
    on_time_rate: str  # per grid: 按期结案率, closed on time ÷ due
    count: str
    by_day: str
    by_child: str


# --- the font ------------------------------------------------------------------------------


def covers(path: Path, text: str) -> set[str]:
    """The characters of `text` the font file has no glyph for."""
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(str(path)).get_charmap()
    return {ch for ch in text if not ch.isspace() and ord(ch) not in charmap}


def _packaged() -> Path | None:
    """The CJK font file the mplfonts package ships, found without importing it (its import
    sets matplotlib up globally)."""
    spec = importlib.util.find_spec(PACKAGED[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PACKAGED[1]
        if path.is_file():
            return path
    return None


def _system() -> Path | None:
    from matplotlib import font_manager

    by_name: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, entry.fname)
    for name in SYSTEM_NAMES:
        if name in by_name:
            return Path(by_name[name])
    return None


@functools.lru_cache(maxsize=8)
def find_font(configured: Path | None = None) -> Path:
    """The font file the charts use: `configured` (GRIDBOT_CHART_FONT), else the packaged
    one, else a system CJK font; each must have the glyphs of PROBE. Raises NoFont."""
    tried: list[str] = []
    candidates: list[tuple[str, Path | None]] = [("GRIDBOT_CHART_FONT", configured)]
    candidates += [("the mplfonts package", _packaged()), ("the system's fonts", None)]
    for source, path in candidates:
        if source == "the system's fonts":
            path = _system()
        if path is None:
            continue
        try:
            missing = covers(path, PROBE)
        except (OSError, RuntimeError, ValueError) as exc:
            tried.append(f"{source}: {path} cannot be read ({exc})")
            continue
        if missing:
            tried.append(f"{source}: {path} lacks {''.join(sorted(missing))}")
            continue
        if tried:
            log.warning("chart font: %s; using %s", "; ".join(tried), path)
        return path
    tried.append("no CJK font among the system's fonts")
    raise NoFont("no font with Chinese glyphs for the charts (" + "; ".join(tried)
                 + "): set GRIDBOT_CHART_FONT to a .ttf/.otf file, or install mplfonts")


# --- drawing -------------------------------------------------------------------------------


def render(title: str, days: Series, labels: Labels, font: Path,
           children: Series | None = None) -> bytes:
    """A PNG: `days` as bars (received, closed) with the on-time share as a line on a second
    axis; `children` (the grids of a community, the communities of a street) as a second
    panel of the same kind. Thread-safe (one chart at a time), so callers may run it in a
    worker thread."""
    with _LOCK:
        return _render(title, days, labels, font, children)


def _render(title: str, days: Series, labels: Labels, font: Path,
            children: Series | None) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    fp = FontProperties(fname=str(font), size=9)
    big = FontProperties(fname=str(font), size=12)
    rows = 2 if children is not None else 1
    fig = Figure(figsize=(SIZE[0], SIZE[1] + (PANEL_HEIGHT if rows == 2 else 0)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False)
    fig.suptitle(title, fontproperties=big)
    _panel(axes[0][0], days, labels, fp, labels.by_day, labels.on_time_share,
           every=_tick_step(len(days.labels)))
    if children is not None:
        _panel(axes[1][0], children, labels, fp, labels.by_child, labels.on_time_rate, every=1)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _tick_step(n: int) -> int:
    return max(1, math.ceil(n / 16))


def _panel(ax: object, data: Series, labels: Labels, fp: object, heading: str,
           line_label: str, every: int) -> None:
    from matplotlib.axes import Axes
    from matplotlib.font_manager import FontProperties
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    assert isinstance(ax, Axes) and isinstance(fp, FontProperties)
    n = len(data.labels)
    xs = list(range(n))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], data.received, width, label=labels.received,
           color=RECEIVED_COLOR)
    ax.bar([x + width / 2 for x in xs], data.closed, width, label=labels.closed,
           color=CLOSED_COLOR)
    ax.set_title(heading, fontproperties=fp, loc="right")
    ax.set_ylabel(labels.count, fontproperties=fp)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0, top=max([1, *data.received, *data.closed]) * 1.15)
    shown = xs[::every]
    ax.set_xticks(shown, [data.labels[i] for i in shown])
    share = ax.twinx()
    ys = [math.nan if v is None else v * 100 for v in data.on_time]
    # Days make a line; grids are separate things, so their rates are marks only.
    joined = every != 1 or n > 8
    share.plot(xs, ys, color=ON_TIME_COLOR, marker="o", markersize=3 if joined else 7,
               linestyle="-" if joined else "none", linewidth=1.5, label=line_label)
    share.set_ylim(0, 105)
    share.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    share.set_ylabel(line_label, fontproperties=fp)
    for tick in [*ax.get_xticklabels(), *ax.get_yticklabels(), *share.get_yticklabels()]:
        tick.set_fontproperties(fp)
    if n > 8 and every == 1:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")
    handles = ax.get_legend_handles_labels()
    line = share.get_legend_handles_labels()
    ax.legend(handles[0] + line[0], handles[1] + line[1], prop=fp, loc="lower left",
              bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False)


def series(labels: Sequence[str], received: Sequence[int], closed: Sequence[int],
           closed_on_time: Sequence[int]) -> Series:
    """A Series from counts: the on-time share is closed on time ÷ closed, per point."""
    return Series(tuple(labels), tuple(received), tuple(closed),
                  tuple(t / c if c else None for t, c in zip(closed_on_time, closed,
                                                             strict=True)))
