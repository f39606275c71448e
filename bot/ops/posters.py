"""扫码报事 posters: one printable A4 page per building, as PNG and PDF (`gridbot poster`).

Each poster carries the building's and the community's names, a QR code of the building's
door link (`https://t.me/<bot>?start=d<key>`, bot/org/door_links.py), three steps in large
type, and the community's hotline when the registry gives one. The words are labels of
`templates/<locale>/labels_poster.j2`, in the registry's locale.

The page is drawn with Pillow at 300 dpi (2480 × 3508 pixels) and saved twice: the PNG, and a
one-page PDF of A4 size made from the same pixels. The QR code is segno's, with error
correction level Q (a quarter of the code may be dirty or torn and it still reads).

Chinese type needs a font with Chinese glyphs: GRIDBOT_POSTER_FONT, else the first found of
Noto Sans CJK (Debian's fonts-noto-cjk), the Noto Sans CJK SC of the mplfonts package,
WenQuanYi (fonts-wqy-microhei, fonts-wqy-zenhei), then fontconfig's choice for Chinese.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import segno
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ledger.charts import covers
from bot.org import door_links
from bot.org.directory import NodeKind, Place, directory
from bot.texts import Texts
from storage.models import Node

DPI = 300
A4 = (2480, 3508)  # 210 × 297 mm at 300 dpi
RED = (196, 18, 48)
PALE_RED = (253, 236, 238)
INK = (28, 28, 28)
GREY = (96, 96, 96)
WHITE = (255, 255, 255)
# Characters every poster has; a font lacking one of them would print boxes.
PROBE = "扫码报事社区楼栋号说清问题可附照片提交核实网格员办理服务热线0123456789-"
INSTALL = ("install a CJK font (Debian: apt-get install fonts-wqy-microhei, or "
           "fonts-noto-cjk) or set GRIDBOT_POSTER_FONT to a .ttf, .otf or .ttc file")
# Fonts of the system worth trying first, best first (Debian's paths, then macOS and Windows).
SYSTEM_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
)
PACKAGED = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")
FALLBACK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


class NoFont(RuntimeError):
    """No font with Chinese glyphs: a poster cannot be printed legibly."""


class PosterError(Exception):
    """What the person at the terminal asked for cannot be made (an unknown code)."""


@dataclass(frozen=True)
class Font:
    path: Path
    index: int = 0  # the face of a font collection (.ttc): its Simplified Chinese one

    def at(self, size: int) -> ImageFont.FreeTypeFont:
        return _font(str(self.path), self.index, size)


@dataclass(frozen=True)
class Poster:
    code: str
    building: str
    community: str
    hotline: str | None
    link: str


# --- the font ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


def _sc_face(path: Path) -> int:
    """The Simplified Chinese face of a collection (Noto Sans CJK's .ttc starts with the
    Japanese one), else its first."""
    if path.suffix.lower() != ".ttc":
        return 0
    for index in range(8):
        try:
            family, _style = ImageFont.truetype(str(path), 12, index=index).getname()
        except OSError:
            break
        if family and family.endswith(" SC"):
            return index
    return 0


def _packaged() -> Path | None:
    spec = importlib.util.find_spec(PACKAGED[0])
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PACKAGED[1]
        if path.is_file():
            return path
    return None


def _fontconfig() -> Path | None:
    """fontconfig's font for Chinese (it answers with some font even without one)."""
    if shutil.which("fc-match") is None:
        return None
    try:
        done = subprocess.run(["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def candidates() -> list[tuple[str, Path | None]]:
    """Where fonts are looked for when GRIDBOT_POSTER_FONT is not set, best first."""
    found: list[tuple[str, Path | None]] = [(p, Path(p)) for p in SYSTEM_FONTS]
    found.append(("the mplfonts package", _packaged()))
    found += [(p, Path(p)) for p in FALLBACK_FONTS]
    found.append(("fontconfig (fc-match :lang=zh-cn)", _fontconfig()))
    return found


def _usable(path: Path) -> str | None:
    """Why the font file cannot print a poster, or None."""
    try:
        missing = covers(path, PROBE)
    except (OSError, RuntimeError, ValueError) as exc:
        return f"cannot be read ({exc})"
    return f"lacks {''.join(sorted(missing))}" if missing else None


def find_font(configured: Path | None = None) -> Font:
    """The poster's font: `configured` (GRIDBOT_POSTER_FONT), which must do; else the first
    of `candidates()` with every character of PROBE. Raises NoFont saying what to install."""
    if configured is not None:
        if not configured.is_file():
            raise NoFont(f"GRIDBOT_POSTER_FONT: no font file {configured}; {INSTALL}")
        why = _usable(configured)
        if why is not None:
            raise NoFont(f"GRIDBOT_POSTER_FONT: {configured} {why}; {INSTALL}")
        return Font(configured, _sc_face(configured))
    for _where, path in candidates():
        if path is not None and path.is_file() and _usable(path) is None:
            return Font(path, _sc_face(path))
    raise NoFont(f"no font with Chinese glyphs for the posters: {INSTALL}")


# --- what to print -------------------------------------------------------------------------


async def buildings(db: AsyncSession, *, building: str | None = None, grid: str | None = None
                    ) -> list[Place]:
    """The active buildings a poster run covers: one, a grid's, or (neither given) all, in
    the registry's order. Raises PosterError for a code that is no such place."""
    d = await directory(db)
    found = d.buildings()
    code = building or grid
    if code is None:
        if not found:
            raise PosterError("the registry has no buildings: load one with "
                              "`gridbot registry load FILE` first")
        return found
    place = next((p for p in d.places.values() if p.code == code and p.active), None)
    want = NodeKind.BUILDING if building else NodeKind.GRID
    option = "--building" if building else "--grid"
    if place is None:
        known = sorted(p.code for p in d.places.values()
                       if p.active and p.kind == want)
        raise PosterError(f"{option}: no {want} {code!r} in the registry (its {want} codes: "
                          f"{', '.join(known) or 'none'})")
    if place.kind != want:
        other = {NodeKind.BUILDING: "--building", NodeKind.GRID: "--grid"}.get(
            NodeKind(place.kind))
        hint = f"; use {other} {code}" if other else ""
        raise PosterError(f"{option}: {code} is a {place.kind}, not a {want}{hint}")
    if building:
        return [place]
    inside = [b for b in found if b.parent_id == place.id]
    if not inside:
        raise PosterError(f"--grid: grid {code} has no buildings")
    return inside


async def posters(db: AsyncSession, places: list[Place], link: Callable[[str], str], *,
                  renew: bool = False) -> list[Poster]:
    """What each building's poster says, with its door key made (or renewed): flushed, not
    committed, so the keys are kept only if the files are written."""
    keys = await door_links.door_keys(db, (p.id for p in places), renew=renew)
    d = await directory(db)
    made = []
    for place in places:
        above = d.ancestors(place)  # grid, community, street
        community = above[1] if len(above) > 1 else None
        hotline = await db.scalar(select(Node.hotline).where(Node.id == community.id)) \
            if community is not None else None
        made.append(Poster(code=place.code, building=place.name,
                           community=community.name if community else "",
                           hotline=hotline, link=link(door_links.payload(keys[place.id]))))
    return made


# --- drawing -------------------------------------------------------------------------------


def draw(poster: Poster, texts: Texts, font: Font) -> Image.Image:
    """The A4 page at 300 dpi, as a Pillow RGB image."""
    width, height = A4
    margin = 170
    page = Image.new("RGB", A4, WHITE)
    d = ImageDraw.Draw(page)

    def fit(text: str, size: int, room: int = width - 2 * margin) -> ImageFont.FreeTypeFont:
        while size > 24 and d.textlength(text, font=font.at(size)) > room:
            size = int(size * 0.94)
        return font.at(size)

    def line(y: float, text: str, size: int, fill: tuple[int, int, int], *,
             bold: bool = False, x: float | None = None, room: int | None = None) -> None:
        f = fit(text, size, room or width - 2 * margin)
        stroke = max(1, int(f.size) // 28) if bold else 0
        d.text((width / 2 if x is None else x, y), text, font=f, fill=fill,
               anchor="mt" if x is None else "lt", stroke_width=stroke, stroke_fill=fill)

    # The band: what this is, and the kind of things to report.
    d.rectangle((0, 0, width, 600), fill=RED)
    line(80, texts.plain("poster_title"), 280, WHITE, bold=True)
    line(440, texts.plain("poster_examples"), 74, WHITE)

    # Where: the community, then the building, large.
    line(665, poster.community, 92, GREY)
    line(785, poster.building, 190, INK, bold=True)

    # The QR code, in a red frame, with its quiet zone inside the frame.
    qr = segno.make(poster.link, error="q", micro=False)
    modules = qr.symbol_size(scale=1, border=4)[0]
    side = 1100
    scale = max(1, side // modules)
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=scale, border=4, dark="black", light="white")
    code = Image.open(buf).convert("RGB")
    top = 1075
    left = (width - code.width) // 2
    pad = 24
    d.rounded_rectangle((left - pad, top - pad, left + code.width + pad, top + code.height + pad),
                        radius=40, outline=RED, width=14)
    page.paste(code, (left, top))
    y = top + code.height + pad + 40
    line(y, texts.plain("poster_scan_hint"), 64, GREY)

    # The three steps: a red disc with the number, a title, a line of detail.
    y += 135
    disc = 150
    x_text = margin + disc + 60
    for n in (1, 2, 3):
        d.ellipse((margin + 20, y, margin + 20 + disc, y + disc), fill=RED)
        d.text((margin + 20 + disc / 2, y + disc / 2), str(n), font=font.at(104), fill=WHITE,
               anchor="mm", stroke_width=3, stroke_fill=WHITE)
        room = width - margin - x_text
        line(y - 6, texts.plain(f"poster_step{n}"), 108, INK, bold=True, x=x_text, room=room)
        line(y + 118, texts.plain(f"poster_step{n}_detail"), 60, GREY, x=x_text, room=room)
        y += 238

    # The hotline, when the community has one; the link in writing, for who cannot scan.
    if poster.hotline:
        d.rounded_rectangle((margin, y, width - margin, y + 160), radius=36, fill=PALE_RED)
        line(y + 34, f"{texts.plain('poster_hotline')}  {poster.hotline}", 92, RED, bold=True)
    footer = texts.plain("poster_no_scan", link=poster.link.removeprefix("https://"))
    line(height - 130, f"{footer}  ·  {poster.code}", 38, GREY)
    return page


def save(page: Image.Image, folder: Path, poster: Poster) -> tuple[Path, Path]:
    """`<code>.png` and `<code>.pdf` in `folder`, each written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, options in ((".png", {"format": "PNG", "dpi": (DPI, DPI)}),
                            (".pdf", {"format": "PDF", "resolution": float(DPI), "quality": 95,
                                      "title": f"{poster.community} {poster.building}"})):
        path = folder / f"{poster.code}{suffix}"
        partial = folder / f".{poster.code}{suffix}.part"
        try:
            page.save(partial, **options)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    return written[0], written[1]


async def write_posters(db: AsyncSession, texts: Texts, link: Callable[[str], str],
                        folder: Path, font: Font, *, building: str | None = None,
                        grid: str | None = None, renew: bool = False
                        ) -> list[tuple[Path, Path]]:
    """Make the posters of one building, a grid's or all, into `folder`; the door keys made
    (or renewed) are committed once every file is written."""
    places = await buildings(db, building=building, grid=grid)
    made = await posters(db, places, link, renew=renew)
    files = [save(draw(p, texts, font), folder, p) for p in made]
    await db.commit()
    return files
