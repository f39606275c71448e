"""Phone numbers, in every format people write them, are masked in what is posted to a group;
numbers that are not phone numbers (case numbers, dates, amounts, ids) are left alone."""

from __future__ import annotations

import pytest

from bot.cases.notify import mask_phones
from tests.harness import BUILDING_CHAT, HEAD, LEADER, RESIDENT, Harness

MASKED: list[tuple[str, str]] = [
    # Mobiles: the form people knew, `138****5678`, whatever the separators.
    ("13812345678", "138****5678"),
    ("电话13812345678谢谢", "电话138****5678谢谢"),
    ("138 1234 5678", "138 **** 5678"),
    ("138-1234-5678", "138-****-5678"),
    ("138.1234.5678", "138.****.5678"),
    ("+86 138 1234 5678", "+86 138 **** 5678"),
    ("+8613812345678", "+86138****5678"),
    ("+86-138-1234-5678", "+86-138-****-5678"),
    ("(+86) 138-1234-5678", "(+86) 138-****-5678"),
    ("0086 138 1234 5678", "0086 138 **** 5678"),
    ("008613812345678", "0086138****5678"),
    ("86-13812345678", "86-138****5678"),
    # Full-width digits and plus sign, from a Chinese input method.
    ("１３８１２３４５６７８", "１３８****５６７８"),
    ("＋８６ １３８ １２３４ ５６７８", "＋８６ １３８ **** ５６７８"),
    ("手机：１９９-８７６５-４３２１。", "手机：１９９-****-４３２１。"),
    # Landlines with an area code: the city stays readable, the subscriber does not.
    ("010-12345678", "010-****5678"),
    ("01012345678", "010****5678"),
    ("(0755) 8888 9999", "(0755) **** 9999"),
    ("0755-88889999", "0755-****9999"),
    ("0571-8888-9999", "0571-****-9999"),
    ("021 6123 4567", "021 **** 4567"),
    ("+86 10 1234 5678", "+86 10 **** 5678"),
    ("（0755）88889999", "（0755）****9999"),
    # Service numbers.
    ("400-820-8820", "400-***-8820"),
    # Several in one text, and one glued to Latin letters.
    ("13812345678/13987654321", "138****5678/139****4321"),
    ("tel13812345678", "tel138****5678"),
    ("联系王师傅 139 8765 4321 或 010-12345678", "联系王师傅 139 **** 4321 或 010-****5678"),
]

LEFT_ALONE = [
    "#123",
    "#12345678",
    "诉求 #4217 已办结",
    "2026-11-23",
    "2026年11月23日 10:00",
    "2026/11/23 22:00-07:00",
    "金额 12000 元",
    "¥1,380,000.00",
    "维修费 3,580 元，共 12 户分摊",
    "编号 20261123001",
    "订单 1381234567890",
    "3号楼2单元1302室",
    "身份证 110101199003071234",
    "95588",
    "BSY-01-03/1",
]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_phone_masked(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_other_numbers_left_alone(text: str) -> None:
    assert mask_phones(text) == text


def test_masked_text_keeps_html_escapes() -> None:
    text = "结果 &lt;已修好&gt; 电话 +86 138-1234-5678 &amp; 0755-88889999"
    assert mask_phones(text) == "结果 &lt;已修好&gt; 电话 +86 138-****-5678 &amp; 0755-****9999"


async def test_resolution_notice_in_the_building_group_masks_every_format(h: Harness) -> None:
    """Through the Dispatcher: the result a handler writes reaches the residents' group with
    every phone number masked; the handler's own copy is untouched."""
    case = await h.report_in_group("楼道灯坏了")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    result = ("已更换灯泡。物业电话 (0755) 8888 9999，电工王师傅 +86 139-8765-4321，"
              "夜间值班 １３８１２３４５６７８。费用 120 元，2026-11-23 完工。")
    await h.press(LEADER, h.card(LEADER, case.id), "办结")
    await h.private(LEADER, result)
    await h.press(LEADER, h.last(LEADER), "提交办结")
    assert (await h.case(case.id)).status == "resolved"
    public = [t for t in h.texts(BUILDING_CHAT) if "已办结" in t]
    assert public, h.texts(BUILDING_CHAT)
    notice = public[-1]
    for secret in ("8888 9999", "8765-4321", "１２３４", "8765"):
        assert secret not in notice, notice
    for kept in ("(0755) **** 9999", "+86 139-****-4321", "１３８****５６７８", "120 元",
                 "2026-11-23", f"#{case.id}"):
        assert kept in notice, notice
    # The reporter reads the result privately, where nothing needs masking.
    assert any("+86 139-8765-4321" in t for t in h.texts(RESIDENT))
