"""Shared pieces for the benchmark scripts: machine description, output, timing.

Every script prints a markdown table and writes JSON; these helpers keep that uniform.
The API here is stable: other benchmark modules import it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SIZES = ("tiny", "small", "full")


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """Describe the machine a result came from (absolute numbers mean nothing without it)."""
    return {
        "cores": os.cpu_count() or 0,
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": _load(),
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    m = m or machine()
    load = "/".join(str(x) for x in m.get("load_avg", [])) or "?"
    return (
        f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"{m['platform']}, load {load}"
    )


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Sequence[Any] | dict[str, Any]], headers: Sequence[str]) -> str:
    """A GitHub markdown table. Rows are sequences, or dicts keyed by header."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        cells = [row.get(h) for h in headers] if isinstance(row, dict) else list(row)
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out)


def write_json(path: str | Path | None, data: Any) -> None:
    """Write results as JSON (no-op when path is None)."""
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", "utf-8")


def ratio(measured: float, baseline: float) -> float | None:
    return measured / baseline if baseline else None


def ratio_line(name: str, measured: float, baseline: float, goal: float, unit: str = "") -> str:
    """One line: ``name: measured vs baseline = r× (goal ≤ g×: met/NOT met)``."""
    r = ratio(measured, baseline)
    if r is None:
        return f"{name}: {measured:.3g}{unit} vs {baseline:.3g}{unit} (no ratio)"
    met = "met" if r <= goal else "NOT met"
    return (
        f"{name}: {measured:.3g}{unit} vs {baseline:.3g}{unit} = {r:.2f}× "
        f"(goal ≤ {goal:.2f}×: {met})"
    )


def goal_met(measured: float | None, goal: float, *, at_most: bool = True) -> bool | None:
    if measured is None:
        return None
    return measured <= goal if at_most else measured >= goal


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["wall"]`` and ``t["cpu"]`` in seconds."""
    out: dict[str, float] = {}
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["wall"] = time.perf_counter() - w0
        out["cpu"] = time.process_time() - c0


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, p in [0, 100]."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options every script takes: --size, --json, --database-url."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--json", dest="json_path", default=None, help="write results here")
    ap.add_argument(
        "--database-url", default=None, help="default: a SQLite file in a temp directory"
    )
    ap.add_argument("--seed", type=int, default=8)
    return ap


def report(
    title: str, table: str, notes: Sequence[str] = (), m: dict[str, Any] | None = None
) -> str:
    """Title, machine line, table and notes as one markdown block (also printed)."""
    parts = [f"## {title}", "", machine_line(m), "", table]
    if notes:
        parts += ["", *notes]
    text = "\n".join(parts)
    print(text)
    sys.stdout.flush()
    return text
