"""Issue 19, defect 6: /stats accepted any period. A 40-year period took 38 s and held a
resident's report; `/stats 0001-01-01..0001-01-02` crashed with OverflowError. A period longer
than a year, or outside the data, is refused with a clear answer, in chat and in the CLI."""

from __future__ import annotations

import pytest

from bot.cli import main
from tests.figures_month import Month
from tests.harness import COMMUNITY_SUP, LEADER, Harness
from tests.ledger.test_figures import cli_db  # noqa: F401  (a fixture)
from tests.ledger.test_stats_chat import month  # noqa: F401  (a fixture)
from tests.test_cli import one_error_line

SORRY = "抱歉"


async def _answer(h: Harness, who: int, text: str) -> str:
    before = len(h.texts(who))
    await h.private(who, text)
    said = h.texts(who)[before:]
    assert len(said) == 1, said
    assert not h.api.files_to(who), "no figures, no chart, no file"
    return said[0]


@pytest.mark.parametrize("command", ["/stats", "/export"])
async def test_a_period_of_forty_years_is_refused(h: Harness, month: Month,  # noqa: F811
                                                  command: str) -> None:
    said = await _answer(h, COMMUNITY_SUP, f"{command} 1990-01-01..2029-12-31")
    assert "最长一年" in said and SORRY not in said


async def test_year_one_is_answered_not_crashed(h: Harness, month: Month) -> None:  # noqa: F811
    said = await _answer(h, LEADER, "/stats 0001-01-01..0001-01-02")
    assert SORRY not in said
    assert "0001-01-01..0001-01-02" in said


async def test_a_period_before_the_first_report_is_refused(h: Harness,
                                                           month: Month) -> None:  # noqa: F811
    said = await _answer(h, LEADER, "/stats 2019-01")
    assert "之前还没有诉求记录" in said and SORRY not in said


async def test_a_period_not_yet_begun_is_refused(h: Harness, month: Month) -> None:  # noqa: F811
    said = await _answer(h, LEADER, "/export 2030-01")
    assert "尚未开始" in said and SORRY not in said


async def test_a_year_to_the_day_is_still_answered(h: Harness, month: Month) -> None:  # noqa: F811
    await h.private(COMMUNITY_SUP, "/stats 2025-11-24..2026-11-23")
    assert "2025-11-24..2026-11-23" in h.api.files_to(COMMUNITY_SUP)[-1].text


@pytest.mark.parametrize(("argv", "words"), [
    (["stats", "--month", "1990-01-01..2029-12-31"], "at most a year"),
    (["stats", "--month", "0001-01-01..0001-01-02"], "--month"),
    (["export", "--month", "1990-01-01..2029-12-31", "-o", "x.xlsx"], "at most a year"),
    (["stats", "--month", "2019-01"], "no case was reported before"),
])
def test_the_cli_refuses_in_one_line(cli_db: str, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                     argv: list[str], words: str) -> None:
    capsys.readouterr()
    assert main(argv) == 1
    assert words in one_error_line(capsys.readouterr().err)
