"""合并 and 拆分 from a handler's case card (bot/cases/merge.py, handlers/merge.py), through the
real
Dispatcher: who is told what, what the database holds, and what the figures and the ledger
count."""

from __future__ import annotations

import io
from datetime import timedelta

import openpyxl
from sqlalchemy import select

from bot.ledger.export import write_ledger
from bot.ledger.figures import Period, compute
from storage.models import Case, CasePhoto
from tests.cases.test_followers import follow
from tests.cases.test_handle import resolve
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING12_CHAT,
    BUILDING_CHAT,
    HEAD,
    HEAD5,
    LEADER,
    LEADER2,
    MORNING,
    RESIDENT,
    RESIDENT2,
    Harness,
)

NEIGHBOUR = 5550003  # a resident who follows the case merged away


async def photos(h: Harness, case_id: int) -> list[str]:
    async with h.app.sessions() as db:
        rows = await db.scalars(select(CasePhoto.file_id).where(
            CasePhoto.case_id == case_id, CasePhoto.kind == "report").order_by(CasePhoto.id))
        return list(rows.all())


async def reported(h: Harness, chat: int, user: int, head: int | None, text: str,
                   photo: str | None = None) -> Case:
    """A group report, confirmed by the building head when there is one."""
    if photo is not None:
        await h.say(chat, user, photo=photo, caption=f"/report {text}")
    else:
        await h.say(chat, user, f"/report {text}")
    case = (await h.cases())[-1]
    if head is not None:
        await h.press(head, h.card(head, case.id), "✅ 属实")
    return await h.case(case.id)


async def two_cases(h: Harness) -> tuple[Case, Case]:
    """The same broken light reported from two buildings of one grid."""
    main = await reported(h, BUILDING_CHAT, RESIDENT, HEAD, "3号楼门口路灯不亮", "m1")
    dup = await reported(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "3号楼门口那盏路灯坏了", "d1")
    assert main.category == dup.category == "facility"
    return main, dup


async def merge_via_buttons(h: Harness, user: int, case_id: int, into: int) -> None:
    await h.press(user, h.card(user, case_id), "合并")
    await h.press(user, h.last(user), next(
        b["text"] for row in h.last(user).buttons for b in row
        if b["text"].startswith(f"#{into} ")))
    assert f"合并到 #{into}" in h.last(user).text
    await h.press(user, h.last(user), "确认合并")


async def test_merge_moves_residents_and_photos_and_tells_them(h: Harness) -> None:
    await h.private(RESIDENT2, "/start")
    await h.private(NEIGHBOUR, "/start")
    main, dup = await two_cases(h)
    assert await follow(h, dup.id, NEIGHBOUR)
    await merge_via_buttons(h, LEADER, dup.id, main.id)
    assert f"已将诉求 #{dup.id} 合并到 #{main.id}" in h.last(LEADER).text

    merged, kept = await h.case(dup.id), await h.case(main.id)
    assert (merged.status, merged.merged_into_id, merged.close_reason) == (
        "merged", main.id, "merged")
    assert merged.closed_at is not None and merged.next_check_at is None
    assert kept.status == "open" and kept.followers == 2
    assert await photos(h, main.id) == ["m1", "d1"]
    assert (await h.events(dup.id))[-1] == "merge"
    assert (await h.events(main.id))[-1] == "merge_in"
    for resident in (RESIDENT2, NEIGHBOUR):
        assert f"#{dup.id} 与 #{main.id}" in h.last(resident).text
        assert "一并办理" in h.last(resident).text
    # The main case's card now counts them; the merged case's /case says where it went.
    await h.private(RESIDENT2, f"/case {dup.id}")
    assert f"已并入诉求 #{main.id}" in h.last(RESIDENT2).text
    await h.private(LEADER, f"/case {dup.id}")
    assert "已合并到：#" in h.last(LEADER).text and "已合并" in h.last(LEADER).text

    # The main case's result reaches the merged case's residents, who may rate it.
    await h.press(LEADER, h.card(LEADER, main.id), "受理")
    await resolve(h, LEADER, main.id, "已更换路灯灯泡")
    for resident in (RESIDENT, RESIDENT2, NEIGHBOUR):
        got = h.last(resident)
        assert "已更换路灯灯泡" in got.text and got.labels == ["满意", "基本满意", "不满意"]
    await h.press(RESIDENT2, h.last(RESIDENT2), "满意")
    assert (await h.case(main.id)).status == "closed"


async def test_merge_by_typed_number_and_its_refusals(h: Harness) -> None:
    main, dup = await two_cases(h)
    other = await reported(h, BUILDING12_CHAT, RESIDENT, None, "路灯不亮")  # grid BSY-02
    await h.press(LEADER, h.card(LEADER, dup.id), "合并")
    picker = h.last(LEADER)
    # Only the grid's own open cases are offered.
    offered = [b["text"] for row in picker.buttons for b in row]
    assert any(t.startswith(f"#{main.id} ") for t in offered)
    assert not any(t.startswith(f"#{other.id} ") for t in offered)
    await h.private(LEADER, f"#{dup.id}")
    assert "不能合并到诉求本身" in h.last(LEADER).text
    await h.private(LEADER, f"#{other.id}")  # another grid: not theirs to see
    assert "未找到该诉求" in h.last(LEADER).text
    await h.private(LEADER, "九号")
    assert "请回复要合并到的诉求编号" in h.last(LEADER).text
    await h.private(LEADER, f"#{main.id}")
    confirm = h.last(LEADER)
    assert f"将诉求 #{dup.id} 合并到 #{main.id}" in confirm.text
    await h.press(LEADER, confirm, "确认合并")
    assert (await h.case(dup.id)).status == "merged"
    # The button pressed again (its keyboard is gone, an old client may still show it), and
    # the merged case's own card: nothing changes.
    await h.press_data(LEADER, "mc:ok", confirm)
    assert h.answers()[-1] == "该操作已过期，请重新开始。"
    await h.press(LEADER, h.card(LEADER, dup.id), "合并")
    assert f"已合并到 #{main.id}" in h.answers()[-1]
    # A resolved case takes nothing in.
    await resolve(h, LEADER, main.id, "已修好")
    third = await reported(h, BUILDING5_CHAT, RESIDENT2, HEAD5, "5号楼门禁坏了")
    await h.press(LEADER, h.card(LEADER, third.id), "合并")
    await h.private(LEADER, str(main.id))
    assert "已办结或不在办理中" in h.last(LEADER).text
    assert (await h.case(third.id)).status == "open"


async def test_merge_refused_to_residents_heads_and_other_grids(h: Harness) -> None:
    main, dup = await two_cases(h)
    card = h.card(LEADER, dup.id)
    data = await h.data_of(LEADER, card, "合并")
    for user in (RESIDENT, HEAD5, LEADER2):
        await h.press_data(user, data, card)
        assert "无权" in h.answers()[-1] or "不能" in h.answers()[-1], h.answers()[-1]
    assert (await h.case(dup.id)).status == "open"
    # LEADER2 handles grid BSY-02 only: a case of BSY-01 is out of their scope as a target.
    other = await reported(h, BUILDING12_CHAT, RESIDENT, None, "路灯不亮")
    await h.press(LEADER2, h.card(LEADER2, other.id), "合并")
    await h.private(LEADER2, f"#{main.id}")
    assert "未找到该诉求" in h.last(LEADER2).text
    assert (await h.case(other.id)).status == "open"


async def test_figures_and_ledger_count_the_main_case_only(h: Harness) -> None:
    main, dup = await two_cases(h)
    await merge_via_buttons(h, LEADER, dup.id, main.id)
    period = Period.month_of(MORNING, "Asia/Shanghai")
    async with h.app.sessions() as db:
        figures = await compute(db, period)
        out = io.BytesIO()
        rows = await write_ledger(db, period, None, out, "xlsx", now=MORNING + timedelta(days=1))
    assert figures.received == 1 and figures.open_at_end == 1
    assert rows == 1
    sheet = openpyxl.load_workbook(io.BytesIO(out.getvalue())).worksheets[0]
    ids = [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert ids == [f"#{main.id}"]


async def test_split_makes_a_second_case_with_chosen_photos(h: Harness) -> None:
    await h.private(RESIDENT, "/start")
    await h.say(BUILDING_CHAT, RESIDENT, photo="s1", caption="/report 楼道灯坏了，楼下垃圾也没人清",
                media_group_id="g1")
    await h.say(BUILDING_CHAT, RESIDENT, photo="s2", media_group_id="g1")
    await h.advance(timedelta(seconds=5))
    [first] = await h.cases()
    await h.press(HEAD, h.card(HEAD, first.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, first.id), "拆分")
    await h.press(LEADER, h.last(LEADER), "环境卫生")
    assert "请写拆分出的问题内容" in h.last(LEADER).text
    await h.private(LEADER, "楼下垃圾没人清运")
    preview = h.last(LEADER)
    assert "楼下垃圾没人清运" in preview.text and preview.labels[:2] == ["照片1", "照片2"]
    await h.press(LEADER, preview, "照片2")
    assert h.last(LEADER).labels[:2] == ["照片1", "✅ 照片2"]
    await h.press(LEADER, h.last(LEADER), "确认拆分")

    first_now, second = await h.cases()
    assert any(f"拆分出新诉求 #{second.id}" in t for t in h.texts(LEADER))
    assert (second.category, second.description, second.split_from_id) == (
        "sanitation", "楼下垃圾没人清运", first.id)
    assert (second.reporter_id, second.building_id, second.source_chat_id) == (
        first.reporter_id, first.building_id, first.source_chat_id)
    assert second.status == "open" and second.verified == "confirmed"
    assert await photos(h, second.id) == ["s2"]
    assert await photos(h, first.id) == ["s1", "s2"]
    assert (first_now.status, first_now.category) == ("open", "facility")
    assert (await h.events(first.id))[-1] == "split"
    assert await h.events(second.id) == ["split_from"]
    card = h.card(LEADER, second.id)
    assert f"拆分诉求 #{second.id}" in card.text and f"拆分自：#{first.id}" in card.text
    assert card.photos == ["s2"]
    assert f"已单独立案为 #{second.id}" in h.last(RESIDENT).text
    # Its deadline is its own category's (环境卫生, 48 h) from the split.
    assert second.deadline_at - second.clock_started_at == timedelta(hours=48)


async def test_split_refused_to_a_resident_and_cancelled(h: Harness) -> None:
    main, _ = await two_cases(h)
    card = h.card(LEADER, main.id)
    await h.press_data(RESIDENT, await h.data_of(LEADER, card, "拆分"), card)
    assert "无权" in h.answers()[-1] or "不能" in h.answers()[-1], h.answers()[-1]
    await h.press(LEADER, card, "拆分")
    await h.press(LEADER, h.last(LEADER), "取消")
    assert h.answers()[-1] == "已取消。"
    assert len(await h.cases()) == 2
