"""Every benchmark, one after the other, into docs/benchmarks.md.

    python3 -m bench [--size tiny|small|full] [--database-url postgresql+asyncpg://…]
                     [--only delivery,sweep,explain,startup,intake,export_writes,
                            reminder_day,answer_latency,care_import]
                     [--no-write]

One at a time on purpose: on a shared machine two benchmarks side by side measure each other.
Each script runs in its own process and prints its markdown; the tables replace the part of
docs/benchmarks.md between the `results` markers, under a line naming the command and the
machine, so the file always says which run produced its numbers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import SIZES, machine_line

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# In this order: the data generator runs inside sweep, explain and startup as needed.
SCRIPTS = ("intake", "delivery", "sweep", "explain", "startup", "export_writes",
           "reminder_day", "answer_latency", "care_import")
# Which scripts also run on a server database when one is given.
ON_SERVER = ("intake", "delivery", "sweep", "explain", "export_writes", "care_import")


def run_one(name: str, size: str, database_url: str | None) -> str:
    argv = [sys.executable, "-m", f"bench.{name}", "--size", size]
    if database_url and name in ON_SERVER:
        argv += ["--database-url", database_url]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return (f"## {name}\n\nFailed (exit {done.returncode}) after {took:.0f} s:\n\n"
                f"```\n{tail}\n```")
    return done.stdout.strip() + f"\n\n_{name}: {took:.0f} s._"


def write(doc: Path, body: str) -> None:
    text = doc.read_text("utf-8") if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{body}\n{END}{tail}", "utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=SIZES, default="full")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--only", default=",".join(SCRIPTS))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    command = "python3 -m bench --size " + args.size + (
        " --database-url …" if args.database_url else "")
    parts = [f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}.", "",
             machine_line()]
    failed = False
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        section = run_one(name, args.size, args.database_url)
        failed |= section.startswith(f"## {name}\n\nFailed")
        print(section, flush=True)
        parts += ["", section.replace("\n## ", "\n### ").replace("## ", "### ", 1)]
    if not args.no_write:
        write(DOC, "\n".join(parts))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
