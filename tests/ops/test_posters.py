"""扫码报事 posters (issue 21, point 6): `gridbot poster` prints a building's QR code; a
resident who scans it starts the bot with the building already chosen and files a report that
lands there. A renewed or altered link falls back to the ordinary flow with one clear line.

The CLI runs in-process on a thread (its own event loop) against the harness's database, with
the local fake Bot API answering its getMe; the QR code is read back from the PNG by OpenCV,
as a phone's camera would, and its link is followed through the real Dispatcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cv2
import pytest
from sqlalchemy import select

from bot.cli import main
from bot.ops import posters
from bot.org import door_links
from bot.org.registry import RegistryError, parse_registry
from bot.telegram.fake import BOT_USERNAME
from storage.models import Case, Node
from tests.fakeserver import FakeBotApi
from tests.harness import RESIDENT, RESIDENT2, SAMPLE, STRANGER, Harness, isolate_env

TOKEN = "123456:TEST-token_for_gridbot"


@pytest.fixture
async def api() -> AsyncIterator[str]:
    """The Bot API the CLI asks for the bot's username (getMe)."""
    server = FakeBotApi(enforce_limits=False)
    url = await server.start()
    yield url
    await server.stop()


@pytest.fixture
def env(h: Harness, api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings: the harness's database, a token, the fake Bot API."""
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", h.app.settings.database_url)
    monkeypatch.setenv("GRIDBOT_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("GRIDBOT_API_URL", api)
    return tmp_path / "posters"


async def poster(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["poster", *args])
    out, err = capsys.readouterr()
    return code, out, err


def qr_link(png: Path) -> str:
    """The link of the QR code in a poster, read by OpenCV from the PNG."""
    image = cv2.imread(str(png))
    assert image is not None, png
    assert image.shape[:2] == (3508, 2480)  # A4 at 300 dpi
    half = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    # OpenCV's classic detector misses about one code in a hundred that phones read (the
    # bare symbol too, whatever its size); its ArUco-based detector reads those.
    for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
        text, points, _ = detector.detectAndDecode(half)
        if points is not None and text:
            return str(text)
    raise AssertionError(f"no QR code read from {png}")


def start_payload(link: str) -> str:
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "t.me", f"/{BOT_USERNAME}")
    return parse_qs(parts.query)["start"][0]


async def node(h: Harness, code: str) -> Node:
    async with h.app.sessions() as db:
        found = await db.scalar(select(Node).where(Node.code == code))
        assert found is not None
        return found


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gridbot: error: "), err
    return lines[0]


async def file_report(h: Harness, user: int, payload: str, text: str) -> None:
    """Scan: /start with the poster's payload, then the report's steps (no building step)."""
    await h.private(user, f"/start {payload}")
    await h.press(user, h.last(user), "市政设施")
    await h.private(user, text)
    await h.press(user, h.last(user), "跳过")  # photos
    await h.private(user, "跳过")  # location
    await h.press(user, h.last(user), "提交")


async def test_a_scanned_poster_files_a_report_in_its_building(
        h: Harness, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await poster(capsys, "--building", "BSY-02-12", "-o", str(env))
    assert code == 0, err
    assert f"@{BOT_USERNAME}" in out and "BSY-02-12" in out
    assert sorted(p.name for p in env.iterdir()) == ["BSY-02-12.pdf", "BSY-02-12.png"]
    pdf = (env / "BSY-02-12.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/MediaBox [ 0 0 595.2 841.92 ]" in pdf  # A4

    payload = start_payload(qr_link(env / "BSY-02-12.png"))
    building = await node(h, "BSY-02-12")
    assert payload == door_links.payload(building.door_key or "")
    assert len(payload) <= 64 and door_links.key_of(payload) is not None

    await file_report(h, RESIDENT, payload, "12号楼门口路灯不亮")
    said = h.texts(RESIDENT)
    assert "柏树郢社区 12号楼" in said[0]  # the welcome names the building
    assert h.app.ctx.texts.plain("ask_building") not in "\n".join(said)  # never asked
    assert h.app.ctx.texts.plain("door_link_stale") not in said[0]
    async with h.app.sessions() as db:
        case = (await db.scalars(select(Case).order_by(Case.id.desc()))).first()
    assert case is not None and case.building_id == building.id
    assert case.description == "12号楼门口路灯不亮"


async def test_a_renewed_or_altered_link_falls_back_with_one_line(
        h: Harness, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (await poster(capsys, "--building", "BSY-01-05", "-o", str(env)))[0] == 0
    old = start_payload(qr_link(env / "BSY-01-05.png"))
    code, out, _ = await poster(capsys, "--building", "BSY-01-05", "--renew", "-o", str(env))
    assert code == 0 and "no longer work" in out
    new = start_payload(qr_link(env / "BSY-01-05.png"))
    assert new != old

    stale = h.app.ctx.texts.plain("door_link_stale")
    ask_building = h.app.ctx.texts.plain("ask_building")
    altered = new[:-1] + ("A" if new[-1] != "A" else "B")
    for user, payload in ((RESIDENT, old), (RESIDENT2, altered), (STRANGER, "d!!")):
        await h.private(user, f"/start {payload}")
        said = h.texts(user)
        assert said[0].startswith(stale), payload
        # The ordinary flow: a person with no building yet is asked for one.
        assert said[-1] == ask_building, payload
        assert sum(stale in s for s in said) == 1

    # The new link works; the group help's building link (`b<id>`) works as before.
    building = await node(h, "BSY-01-05")
    await file_report(h, RESIDENT, new, "5号楼楼道灯坏了")
    assert (await h.cases())[-1].building_id == building.id
    other = await node(h, "BSY-02-12")
    await h.private(RESIDENT2, f"/start b{other.id}")
    assert "12号楼" in h.texts(RESIDENT2)[-2]
    assert h.texts(RESIDENT2)[-1] == h.app.ctx.texts.plain("ask_category")


async def test_grid_and_all_write_one_pair_per_building_and_keep_their_keys(
        h: Harness, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await poster(capsys, "--grid", "BSY-01", "-o", str(env / "grid"))
    assert code == 0, err
    assert sorted(p.name for p in (env / "grid").iterdir()) == [
        "BSY-01-03.pdf", "BSY-01-03.png", "BSY-01-05.pdf", "BSY-01-05.png"]
    first = {c: (await node(h, c)).door_key for c in ("BSY-01-03", "BSY-01-05")}
    assert all(first.values()) and len(set(first.values())) == 2

    code, out, err = await poster(capsys, "--all", "-o", str(env / "all"))
    assert code == 0, err
    assert "wrote 3 posters" in out
    assert sorted(p.name for p in (env / "all").iterdir()) == [
        f"{c}.{s}" for c in ("BSY-01-03", "BSY-01-05", "BSY-02-12") for s in ("pdf", "png")]
    # Printing again keeps a building's link: the posters already on doors still work.
    assert {c: (await node(h, c)).door_key for c in first} == first
    assert start_payload(qr_link(env / "all" / "BSY-01-03.png")) == door_links.payload(
        first["BSY-01-03"] or "")


@pytest.mark.parametrize(("args", "says"), [
    (["--building", "NOPE"], "--building: no building 'NOPE' in the registry (its building "
                             "codes: BSY-01-03, BSY-01-05, BSY-02-12)"),
    (["--grid", "BSY-01-03"], "--grid: BSY-01-03 is a building, not a grid; use --building "
                              "BSY-01-03"),
    (["--building", "BSY-01"], "--building: BSY-01 is a grid, not a building; use --grid"),
])
async def test_an_unknown_code_is_one_line_and_makes_no_key(
        h: Harness, env: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        says: str) -> None:
    code, _, err = await poster(capsys, *args, "-o", str(env))
    assert code == 1
    assert says in one_error_line(err)
    assert not env.exists()
    async with h.app.sessions() as db:
        assert await db.scalar(select(Node.id).where(Node.door_key.is_not(None))) is None


async def test_a_missing_font_is_one_line_saying_what_to_install(
        h: Harness, env: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDBOT_POSTER_FONT", str(env.parent / "no-such-font.ttf"))
    code, _, err = await poster(capsys, "--all", "-o", str(env))
    line = one_error_line(err)
    assert code == 1 and "GRIDBOT_POSTER_FONT: no font file" in line
    assert "apt-get install fonts-wqy-microhei" in line

    # No font set and none found anywhere.
    monkeypatch.delenv("GRIDBOT_POSTER_FONT")
    monkeypatch.setattr(posters, "candidates", lambda: [("nowhere", None)])
    code, _, err = await poster(capsys, "--all", "-o", str(env))
    line = one_error_line(err)
    assert code == 1 and "no font with Chinese glyphs" in line
    assert "apt-get install fonts-wqy-microhei" in line and "GRIDBOT_POSTER_FONT" in line
    assert not env.exists()


async def test_the_registry_gives_a_community_its_hotline(h: Harness) -> None:
    assert (await node(h, "BSY")).hotline == "0551-62000000"
    text = SAMPLE.read_text("utf-8")
    assert parse_registry(text.replace('hotline: "0551-62000000"', "hotline: 12345"))
    with pytest.raises(RegistryError) as refused:
        parse_registry(text.replace('hotline: "0551-62000000"', "hotline: call us"))
    assert any("hotline" in p and "at least 3 digits" in p for p in refused.value.problems)
