from tests.harness import BUILDING_CHAT, HEAD, LEADER, RESIDENT, Harness


async def test_group_report_goes_to_head(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 楼道灯坏了")
    cases = await h.cases()
    assert len(cases) == 1
    print(h.texts(BUILDING_CHAT))
    print(h.texts(HEAD))
    card = h.card(HEAD, cases[0].id)
    await h.press(HEAD, card, "✅ 属实")
    print(h.answers())
    print(h.texts(LEADER))
    assert (await h.case(cases[0].id)).status == "open"
