"""A location shared at the building step that the bot did not place at the chosen building
is not kept when the resident presses 跳过 at the location step (issue 20, defect 8): the
summary says 定位：无, and staff get no 高德 link and no 📍 for it."""

from __future__ import annotations

from bot.org import geo
from tests.harness import HEAD, LEADER2, RESIDENT, Harness
from tests.org.test_geo import load, registry


async def report_after_skip(h: Harness, building: str) -> str:
    """Category, description, no photo, and 跳过 at the location step; the summary."""
    await h.press(RESIDENT, h.last(RESIDENT), "环境卫生")
    await h.private(RESIDENT, "垃圾桶满了三天没人清运")
    await h.press(RESIDENT, h.last(RESIDENT), "下一步")
    assert "位置" in h.last(RESIDENT).text
    await h.private(RESIDENT, "跳过")
    summary = h.last(RESIDENT)
    assert building in summary.text
    return summary.text


async def test_a_location_outside_every_grid_is_dropped_by_skip(h: Harness) -> None:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    await h.private(RESIDENT, location=(31.23, 121.47))  # Shanghai: some 400 km away
    assert "不在我们的网格范围内" in h.texts(RESIDENT)[-2]
    await h.press(RESIDENT, h.last(RESIDENT), "柏树郢社区 3号楼")
    summary = await report_after_skip(h, "3号楼")
    assert "定位：无" in summary and "定位：已附" not in summary
    await h.press(RESIDENT, h.last(RESIDENT), "提交")
    [case] = await h.cases()
    assert (case.latitude, case.longitude) == (None, None)
    card = h.card(HEAD, case.id)
    assert "amap" not in card.text
    assert "📍 位置" not in str(card.buttons)


async def test_a_location_in_another_grid_is_dropped_by_skip(h: Harness) -> None:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    lon, lat = geo.gcj02_to_wgs84(117.2951, 31.8001)  # by 3号楼, grid BSY-01
    await h.private(RESIDENT, location=(lat, lon))
    await h.press(RESIDENT, h.last(RESIDENT), "选择其他楼栋")
    await h.press(RESIDENT, h.last(RESIDENT), "柏树郢社区 12号楼")  # grid BSY-02
    summary = await report_after_skip(h, "12号楼")
    assert "定位：无" in summary
    await h.press(RESIDENT, h.last(RESIDENT), "提交")
    [case] = await h.cases()
    assert (case.latitude, case.longitude) == (None, None)
    assert not any("amap" in t for t in h.texts(LEADER2))


async def test_a_location_placed_at_the_building_is_kept_by_skip(h: Harness) -> None:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    lon, lat = geo.gcj02_to_wgs84(117.2951, 31.8001)
    await h.private(RESIDENT, location=(lat, lon))
    await h.press(RESIDENT, h.last(RESIDENT), "✅ 柏树郢社区 3号楼")
    assert "定位：已附" in await report_after_skip(h, "3号楼")
