"""📍 on staff cards: a report's location goes, on request, as a Telegram venue to the
private chat of the staff member who asked; never to a group, never to residents."""

from __future__ import annotations

from bot.org import geo
from tests.harness import (
    BUILDING_CHAT,
    HEAD,
    RESIDENT,
    UNIT_HEAD,
    WORK_CHAT,
    Harness,
)
from tests.org.test_geo import load, registry


async def _located_report(h: Harness) -> tuple[int, float, float]:
    await load(h, registry())
    await h.private(RESIDENT, "/start")
    lon, lat = geo.gcj02_to_wgs84(117.2951, 31.8001)
    await h.private(RESIDENT, location=(lat, lon))
    await h.press(RESIDENT, h.last(RESIDENT), "✅ 柏树郢社区 3号楼")
    await h.press(RESIDENT, h.last(RESIDENT), "环境卫生")
    await h.private(RESIDENT, "快递柜旁边的垃圾桶满了")
    await h.press(RESIDENT, h.last(RESIDENT), "下一步")
    await h.private(RESIDENT, "跳过")
    await h.press(RESIDENT, h.last(RESIDENT), "提交")
    [case] = await h.cases()
    return case.id, lat, lon


async def test_staff_get_the_place_as_a_venue_privately(h: Harness) -> None:
    case_id, lat, lon = await _located_report(h)
    card = h.card(HEAD, case_id)
    assert "📍 位置" in card.labels
    groups_before = len(h.api.to(BUILDING_CHAT)) + len(h.api.to(WORK_CHAT))
    await h.press(HEAD, card, "📍 位置")
    [venue] = [s for s in h.api.to(HEAD) if s.venue is not None]
    assert venue.venue == (lat, lon, f"诉求 #{case_id} 的位置", "柏树郢社区 3号楼")
    assert "位置已私信发给您" in h.answers()[-1]
    # A second press is answered again (each press is its own request).
    await h.press(HEAD, card, "📍 位置")
    assert len([s for s in h.api.to(HEAD) if s.venue is not None]) == 2
    # Nothing went to a group.
    assert len(h.api.to(BUILDING_CHAT)) + len(h.api.to(WORK_CHAT)) == groups_before


async def test_residents_and_unit_heads_never_get_it(h: Harness) -> None:
    case_id, _, _ = await _located_report(h)
    data = h.card(HEAD, case_id).button_data("📍 位置")
    for person in (RESIDENT, UNIT_HEAD):
        await h.press_data(person, data)
        assert "只有处理这条诉求的工作人员" in h.answers()[-1]
        assert not [s for s in h.api.to(person) if s.venue is not None]
    # Residents never see the button either.
    assert all("📍 位置" not in s.labels for s in h.api.to(RESIDENT))


async def test_no_location_no_button(h: Harness) -> None:
    await h.private(RESIDENT, "/start")
    await h.say(BUILDING_CHAT, RESIDENT, "/report 3单元一楼地面全是水")
    [case] = await h.cases()
    assert "📍 位置" not in h.card(HEAD, case.id).labels


def test_a_venue_row_is_one_call_after_its_text() -> None:
    from bot.telegram.delivery import plan
    from storage.models import Outbox

    venue = geo.Venue(31.8, 117.29, "诉求 #7 的位置", "3号楼")
    alone = Outbox(text="", photos=[venue.media()], parts_done=0)
    assert [(p.kind, p.venue) for p in plan(alone)] == [("venue", venue)]
    card = Outbox(text="卡片", photos=["p1", venue.media()], parts_done=0)
    # Not captioned: the photo, the text, then the venue.
    assert [p.kind for p in plan(card)] == ["photos", "text", "venue"]


async def test_a_department_card_has_the_map_link(h: Harness) -> None:
    from tests.harness import LEADER, POLICE
    from tests.workflow.test_whistles import blow

    case_id, _, _ = await _located_report(h)
    await h.press(HEAD, h.card(HEAD, case_id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case_id), "受理")
    await blow(h, await h.case(case_id))
    card = [s for s in h.api.to(POLICE) if "吹哨报到" in s.text][-1]
    assert "https://uri.amap.com/marker?position=117.295100,31.800100" in card.text
