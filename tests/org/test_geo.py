"""Location to grid: GCJ-02 ↔ WGS-84 on known points, routing by grid boundaries (inside, on
the edge, outside), the private flow's shared location, and the registry's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cases.registry_edit import apply_registry
from bot.org import geo
from bot.org.directory import directory
from bot.org.registry import RegistryError, parse_registry
from tests.harness import HEAD, RESIDENT, SAMPLE, Harness

# GCJ-02 boundaries as drawn on 高德 for the sample's two grids (they share the edge at
# lon 117.303), and points for their buildings.
B1 = [[117.290, 31.790], [117.303, 31.790], [117.303, 31.810], [117.290, 31.810]]
B2 = [[117.303, 31.790], [117.316, 31.790], [117.316, 31.810], [117.303, 31.810]]
POINTS = {"BSY-01-03": [117.295, 31.800], "BSY-01-05": [117.300, 31.806],
          "BSY-02-12": [117.310, 31.800]}


def registry(crs: str = "gcj02", b1: Any = B1, b2: Any = B2) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE.read_text("utf-8"))
    data["crs"] = crs
    for grid in data["streets"][0]["communities"][0]["grids"]:
        grid["boundary"] = b1 if grid["code"] == "BSY-01" else b2
        for b in grid["buildings"]:
            b["point"] = POINTS.get(b["code"])
    return data


def text(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


async def load(h: Harness, data: dict[str, Any], base: Path | None = None) -> None:
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text(data), base), h.clock)


# --- conversion ------------------------------------------------------------------------------


def test_known_points() -> None:
    # Tiananmen: WGS-84 (116.391, 39.907) is GCJ-02 (116.39724…, 39.90840…) by the public
    # formula, about 600 m east on a Chinese map.
    lon, lat = geo.wgs84_to_gcj02(116.391, 39.907)
    assert lon == pytest.approx(116.39724095859891, abs=1e-9)
    assert lat == pytest.approx(39.9084011088464, abs=1e-9)
    back = geo.gcj02_to_wgs84(lon, lat)
    assert back == pytest.approx((116.391, 39.907), abs=1e-6)
    # Hefei (the sample's grids) round trip, and a point outside China is unchanged.
    w = geo.gcj02_to_wgs84(117.295, 31.800)
    assert geo.wgs84_to_gcj02(*w) == pytest.approx((117.295, 31.800), abs=1e-6)
    assert w != pytest.approx((117.295, 31.800), abs=1e-4)
    assert geo.wgs84_to_gcj02(2.2945, 48.8584) == (2.2945, 48.8584)
    assert geo.gcj02_to_wgs84(2.2945, 48.8584) == (2.2945, 48.8584)


def test_amap_link_is_gcj02() -> None:
    lon, lat = geo.gcj02_to_wgs84(117.295, 31.800)
    assert geo.amap_url(lon, lat) == "https://uri.amap.com/marker?position=117.295000,31.800000"


# --- routing -----------------------------------------------------------------------------------


async def test_routing_inside_edge_outside(h: Harness) -> None:
    await load(h, registry())
    async with h.app.sessions() as db:
        d = await directory(db)
    routes = geo.router(d)
    assert geo.router(d) is routes  # built once per directory
    assert {g.code for g in routes.grids} == {"BSY-01", "BSY-02"}
    inside = geo.gcj02_to_wgs84(117.2951, 31.8001)
    grid = routes.grid_at(*inside)
    assert grid is not None and grid.code == "BSY-01"
    near = routes.nearest_building(grid, *inside)
    assert near is not None and near.code == "BSY-01-03"
    near5 = routes.nearest_building(grid, *geo.gcj02_to_wgs84(117.301, 31.807))
    assert near5 is not None and near5.code == "BSY-01-05"
    east = routes.grid_at(*geo.gcj02_to_wgs84(117.311, 31.801))
    assert east is not None and east.code == "BSY-02"
    # A corner of the boundary, exactly: on the edge counts as inside.
    corner = d.by_code["BSY-01"].boundary[0]
    edge = routes.grid_at(*corner)
    assert edge is not None and edge.code == "BSY-01"
    assert routes.grid_at(*geo.gcj02_to_wgs84(117.280, 31.800)) is None
    assert routes.grid_at(121.47, 31.23) is None  # Shanghai


async def test_edge_midpoint_in_wgs84(h: Harness) -> None:
    # crs: wgs84 keeps the numbers: the middle of the west edge is exactly on it.
    await load(h, registry("wgs84"))
    async with h.app.sessions() as db:
        routes = geo.router(await directory(db))
    edge = routes.grid_at(117.290, 31.800)
    assert edge is not None and edge.code == "BSY-01"
    assert routes.grid_at(117.2899999, 31.800) is None


# --- the private flow --------------------------------------------------------------------------


async def test_location_inside_proposes_nearest_building(h: Harness) -> None:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    assert any("发送位置" in t for t in h.texts(RESIDENT))
    lon, lat = geo.gcj02_to_wgs84(117.2951, 31.8001)
    await h.private(RESIDENT, location=(lat, lon))
    proposal = h.last(RESIDENT)
    assert "柏树郢第一网格" in proposal.text
    await h.press(RESIDENT, proposal, "✅ 柏树郢社区 3号楼")
    cats = h.last(RESIDENT)
    await h.press(RESIDENT, cats, "环境卫生")
    await h.private(RESIDENT, "垃圾桶满了三天没人清运")
    await h.press(RESIDENT, h.last(RESIDENT), "下一步")
    await h.private(RESIDENT, "跳过")  # the location step: the one shared is kept
    summary = h.last(RESIDENT)
    assert "定位：已附" in summary.text
    await h.press(RESIDENT, summary, "提交")
    [case] = await h.cases()
    async with h.app.sessions() as db:
        d = await directory(db)
    assert case.building_id == d.by_code["BSY-01-03"].id
    assert (case.latitude, case.longitude) == (lat, lon)
    card = h.card(HEAD, case.id)
    assert "https://uri.amap.com/marker?position=117.295100,31.800100" in card.text
    # Residents never see the link.
    assert not any("amap" in t for t in h.texts(RESIDENT))


async def test_location_other_building_and_outside(h: Harness) -> None:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    lon, lat = geo.gcj02_to_wgs84(117.2951, 31.8001)
    await h.private(RESIDENT, location=(lat, lon))
    await h.press(RESIDENT, h.last(RESIDENT), "选择其他楼栋")
    assert "柏树郢社区 12号楼" in str(h.last(RESIDENT).buttons)
    await h.private(RESIDENT, "/start")
    await h.private(RESIDENT, location=(31.23, 121.47))
    texts = h.texts(RESIDENT)
    assert "不在我们的网格范围内" in texts[-2]
    assert "柏树郢社区 3号楼" in str(h.last(RESIDENT).buttons)


async def test_no_boundaries_no_location_offer(h: Harness) -> None:
    await h.private(RESIDENT, "/start")
    assert not any("发送位置" in t for t in h.texts(RESIDENT))


# --- the registry ------------------------------------------------------------------------------


def problems(data: dict[str, Any], base: Path | None = None) -> str:
    with pytest.raises(RegistryError) as info:
        parse_registry(text(data), base)
    return "\n".join(info.value.problems)


def test_registry_errors(tmp_path: Path) -> None:
    bowtie = [[117.290, 31.790], [117.303, 31.810], [117.303, 31.790], [117.290, 31.810]]
    found = problems(registry(b1=bowtie))
    assert "communities[0].grids[0].boundary: not a valid polygon" in found
    assert "line " in found
    assert "at least 3 points" in problems(registry(b1=B1[:2]))
    data = registry()
    data["streets"][0]["communities"][0]["grids"][0]["buildings"][0]["point"] = [1, 2, 3]
    assert "buildings[0].point" in problems(data) and "two numbers" in problems(data)
    data = registry()
    grid = data["streets"][0]["communities"][0]["grids"][0]
    del grid["boundary"]
    grid["boundary_file"] = "boundaries/BSY-01.geojson"
    found = problems(data, tmp_path)
    assert "grids[0].boundary_file: cannot read" in found
    data["crs"] = "bd09"
    assert "crs" in problems(data, tmp_path)
    # A building whose point lies in the other grid (or outside both) is named.
    data = registry()
    grid = data["streets"][0]["communities"][0]["grids"][0]
    grid["buildings"][0]["point"] = POINTS["BSY-02-12"]
    found = problems(data)
    assert "grids[0].buildings[0].point: BSY-01-03 lies outside its grid's boundary" in found
    # On the edge it shares with the next grid is inside.
    grid["buildings"][0]["point"] = [117.303, 31.800]
    parse_registry(text(data), None)


async def test_boundary_file_and_unchanged_registries(h: Harness, tmp_path: Path) -> None:
    folder = tmp_path / "boundaries"
    folder.mkdir()
    ring = [*B1, B1[0]]
    (folder / "BSY-01.geojson").write_text(json.dumps(
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                          "coordinates": [ring]}}))
    data = registry()
    grid = data["streets"][0]["communities"][0]["grids"][0]
    del grid["boundary"]
    grid["boundary_file"] = "boundaries/BSY-01.geojson"
    await load(h, data, tmp_path)
    async with h.app.sessions() as db:
        d = await directory(db)
    g = geo.router(d).grid_at(*geo.gcj02_to_wgs84(117.2951, 31.8001))
    assert g is not None and g.code == "BSY-01"
    assert d.by_code["BSY-01-03"].lon == pytest.approx(geo.gcj02_to_wgs84(117.295, 31.8)[0])
    await load(h, data, tmp_path)  # the same again: the same boundary
    async with h.app.sessions() as db:
        assert (await directory(db)).by_code["BSY-01"].boundary == d.by_code["BSY-01"].boundary
    # The sample (no boundaries) removes them: SQL NULL, and no routing.
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), h.clock)
    async with h.app.sessions() as db:
        d = await directory(db)
    assert d.by_code["BSY-01"].boundary is None and d.by_code["BSY-01-03"].lon is None
    assert geo.router(d).grids == ()


def test_a_start_does_not_import_shapely() -> None:
    """shapely takes about 0.3 s to import: routing loads it, the bot's start does not."""
    import subprocess
    import sys

    code = "import sys, bot.app, handlers; print('shapely' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
