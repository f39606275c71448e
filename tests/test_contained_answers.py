"""What a handler changes on screen while answering (a button's toast, a card's buttons
edited) is cosmetic: when Telegram refuses it, the update still counts as handled. Otherwise
the update is run again, the person is told the button is stale, and then "抱歉，系统出了点问题"
although their press went through. Through the real Dispatcher."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage.models import InboxUpdate
from tests.harness import HEAD, LEADER, Harness

INTERNAL = "抱歉，系统出了点问题"
FAULTS = [
    (400, "Bad Request: query is too old and response timeout expired or query ID is invalid"),
    (429, "Too Many Requests: retry after 3"),
    (502, "Bad Gateway"),
]


async def statuses(h: Harness) -> list[str]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(InboxUpdate.status))).all())


@pytest.mark.parametrize(("method", "fault"), [
    ("answerCallbackQuery", f) for f in FAULTS] + [("editMessageReplyMarkup", f) for f in FAULTS])
async def test_a_refused_toast_or_edit_does_not_fail_the_press(
        h: Harness, method: str, fault: tuple[int, str]) -> None:
    case = await h.report_in_group()
    h.api.fail_next_call(method, *fault)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert (await h.case(case.id)).status == "open"
    assert await h.events(case.id) == ["report", "confirm"]
    assert h.card(LEADER, case.id), "the grid leader got the card"
    assert not [a for a in h.answers() if INTERNAL in a]
    assert not [t for t in h.texts(HEAD) if INTERNAL in t]
    assert "failed" not in await statuses(h) and "new" not in await statuses(h)
