"""The export benchmark runs at its tiniest size: every mode measured, the export read every
row (its timings are for docs/benchmarks.md, never asserted here)."""

from __future__ import annotations

import pytest

from bench import export_writes

pytestmark = pytest.mark.slow


async def test_export_bench_tiny() -> None:
    results = await export_writes.run("tiny", 8, None)
    assert [r["mode"] for r in results] == ["alone", "read", "write", "alone"]
    assert all(r["reports"] == export_writes.REPORTS for r in results)
    read, write = results[1], results[2]
    assert read["export_rows"] == write["export_rows"] > 0
