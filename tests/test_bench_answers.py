"""The answer-latency benchmark runs once, in the product's mode: the prompt after 办结 came
and the chat's pace was kept (its timings are for docs/benchmarks.md, never asserted)."""

from __future__ import annotations

import pytest

from bench import answer_latency

pytestmark = pytest.mark.slow


async def test_answer_latency_bench_runs() -> None:
    [result] = await answer_latency.run(1, ("answers first",))
    assert result["mode"] == "answers first" and result["trials"] == 1
    assert result["most_sent_before_it"] <= 1
