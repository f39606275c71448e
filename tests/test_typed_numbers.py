"""Numbers people type, and updates that fail (issue 20, defect 11).

- A number a person types is read as ASCII digits, full-width ones (０-９, as Chinese input
  methods write them) converted; anything else ("²" and "١٢", which `str.isdigit()` takes and
  `int()` refuses or reads) gets a clear answer, never a crash. One helper
  (`bot.user_text.typed_number`) reads them for every command and prompt.
- An update whose handler fails is retried by the inbox, and the person is told
  「抱歉，系统出了点问题」 at most once for it, however many times it is tried.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.telegram.inbox import MAX_ATTEMPTS, Inbox, store
from bot.workflow.suspension import parse_review
from storage.models import InboxUpdate
from tests.harness import LEADER, MORNING, Harness, isolate_env
from tests.notices.test_notices import send_to_grid

INTERNAL = "抱歉，系统出了点问题"


def test_typed_number_reads_ascii_and_full_width_digits_only() -> None:
    from bot.user_text import typed_number

    for text, want in (("12", 12), ("１２", 12), (" 12 ", 12), ("#12", 12), ("＃１２", 12),
                       ("# 12", 12), ("0", 0), ("123456789", 123456789), ("1２", 12)):
        assert typed_number(text) == want, text
    for text in ("", " ", "²", "¹²", "١٢", "१२", "٣", "1.5", "-3", "+3", "1 2", "12a", "a12",
                 "1234567890", "#", "##12", "½", None):
        assert typed_number(text) is None, text
    assert typed_number("1234567890", digits=10) == 1234567890
    # A few words before the number, where a prompt allows them: never another digit.
    assert typed_number("诉求12", prefix=4) == 12
    assert typed_number("诉求＃１２", prefix=4) == 12
    assert typed_number("诉求12", prefix=1) is None
    assert typed_number("²12", prefix=4) is None and typed_number("١ 12", prefix=4) is None
    assert typed_number("3 12", prefix=4) is None


async def inbox_run(h: Harness, *texts: str) -> Inbox:
    """`texts` from the grid leader, stored and handled by the inbox as a running bot does,
    until nothing is left to try."""
    inbox = Inbox(h.app.bot, h.app.dp, h.app.sessions, h.clock.now)
    await store(h.app.sessions, [h.updates.message(LEADER, LEADER, t) for t in texts],
                h.clock.now())
    for _ in range(MAX_ATTEMPTS + 2):
        if not await inbox.process_pending():
            break
    await h.deliver()
    return inbox


async def inbox_rows(h: Harness) -> list[InboxUpdate]:
    async with h.app.sessions() as db:
        return list((await db.scalars(select(InboxUpdate).order_by(InboxUpdate.id))).all())


async def test_notices_with_a_superscript_is_answered_not_apologised_for(h: Harness) -> None:
    await send_to_grid(h, photo=None)
    await inbox_run(h, "/notices ²", "/notices ١")
    said = h.texts(LEADER)[-2:]
    assert not [t for t in h.texts(LEADER) if INTERNAL in t], h.texts(LEADER)
    assert all("/notices 编号" in t for t in said), said
    assert [r.status for r in await inbox_rows(h)][-2:] == ["done", "done"]


async def test_a_failing_update_is_apologised_for_once(
        h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from bot.notices import service

    async def broken(*_args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "recent", broken)
    caplog.set_level(logging.INFO)
    await inbox_run(h, "/notices")
    [row] = await inbox_rows(h)
    assert (row.status, row.attempts, row.reason) == ("failed", MAX_ATTEMPTS, "RuntimeError")
    apologies = [t for t in h.texts(LEADER) if INTERNAL in t]
    assert len(apologies) == 1, h.texts(LEADER)
    # Each try is in the log.
    tries = [r for r in caplog.records if "RuntimeError" in r.getMessage()]
    assert len(tries) >= MAX_ATTEMPTS, [r.getMessage() for r in caplog.records]


async def test_full_width_numbers_are_read(h: Harness) -> None:
    await send_to_grid(h, photo=None)
    for text in ("/notices １", "/notices ＃１", "/notices #1"):
        await h.private(LEADER, text)
        assert "已确认 0/3 个群" in h.last(LEADER).text, text
    case = await h.report_in_group()
    wide = str(case.id).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    await h.private(LEADER, f"/case {wide}")
    assert f"#{case.id}" in h.last(LEADER).text and "用法" not in h.last(LEADER).text
    await h.private(LEADER, f"/case ＃{wide}")
    assert f"#{case.id}" in h.last(LEADER).text and "用法" not in h.last(LEADER).text
    await h.private(LEADER, "/cases １")
    assert "用法" not in h.last(LEADER).text
    for text in ("/cases ²", "/cases ٢", "/case ²"):
        await h.private(LEADER, text)
        assert "用法" in h.last(LEADER).text, text


async def test_a_period_in_full_width_digits_and_one_in_another_script(h: Harness) -> None:
    await h.private(LEADER, "/stats ２０２６-１１-０１..２０２６-１１-２０")
    got = h.last(LEADER)
    assert "看不懂" not in got.text and "2026-11-01..2026-11-20" in got.text, got.text
    for period in ("٢٠٢٦-١١", "²⁰²⁶-¹¹"):
        await h.private(LEADER, f"/stats {period}")
        assert "看不懂时间" in h.last(LEADER).text, period
    assert not [t for t in h.texts(LEADER) if INTERNAL in t]


def test_cli_ids_typed_with_other_digits_are_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    for argv, want in ((["privacy", "export", "²"], "USER_ID must be"),
                       (["privacy", "erase", "١٢"], "USER_ID must be"),
                       (["inbox", "retry", "²"], "ID must be an inbox row id"),
                       (["outbox", "retry", "²"], "ID must be an outbox message id")):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith(f"gridbot: error: {want}"), (argv, err)


def wide(number: int) -> str:
    return str(number).translate(str.maketrans("0123456789", "０１２３４５６７８９"))


async def test_a_merge_target_typed_in_full_width_or_another_script(h: Harness) -> None:
    from tests.cases.test_merge import two_cases

    main_case, dup = await two_cases(h)
    await h.press(LEADER, h.card(LEADER, dup.id), "合并")
    arabic = str(main_case.id).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for text in ("²", arabic, f"#{arabic}"):
        await h.private(LEADER, text)
        assert "请回复要合并到的诉求编号" in h.last(LEADER).text, text
    await h.private(LEADER, f"诉求＃{wide(main_case.id)}")
    assert f"将诉求 #{dup.id} 合并到 #{main_case.id}" in h.last(LEADER).text


@pytest.mark.parametrize(
    "typed", ["45d", "４５d", "45天", "2027-03-01", "２０２７年３月１日", "03-01"])
def test_a_review_date_in_ascii_or_full_width_digits_is_read(typed: str) -> None:
    review = parse_review(typed, MORNING, "Asia/Shanghai")
    assert review > MORNING


@pytest.mark.parametrize("typed", ["⁴⁵d", "٤٥d", "४५ 天", "2027-03-0¹"])
def test_a_review_date_in_other_digits_is_refused(typed: str) -> None:
    """A superscript or another script's digits is no number typed: the prompt is asked
    again, as for any date the bot cannot read."""
    with pytest.raises(ValueError):
        parse_review(typed, MORNING, "Asia/Shanghai")
