"""Start-up time and idle memory of a real `gridbot run` beside the bare aiogram bot.

Both run as real processes, one after the other and alternating, against one local fake Bot
API (tests.fakeserver.FakeBotApi, limits not enforced) over HTTP:
- `gridbot run --registry FILE` (python3 -m bot.cli) on a copy of the generated database of
  the size's largest N (full: 1M cases), the registry file the database was made from;
- the framework floor, bench.floor_bot: a bare aiogram bot polling the same fake server and
  answering each message once.
Before each process starts, one `/report` is queued at the fake server; the time from the
process's start to the first message the fake server receives in that chat is "start to
first update handled". Then the process idles for a few seconds and its RSS (VmRSS from
/proc, and the peak VmHWM) is read. Goal: Gridbot within 1.10× of the bare bot on both.

The process runs on the system clock while the generated database stands at bench.gen.NOW:
timer steps that fell due in between are swept at start, as they would be after a real stop.

`python3 -m bench.startup --size full [--json out.json]`
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from bench.common import base_parser, machine, markdown_table, report, write_json
from bench.gen import NOW, SIZES, generate, registry_dict
from tests.e2e import TOKEN, building_chat, report_update, resident
from tests.fakeserver import FakeBotApi

ROOT = Path(__file__).resolve().parent.parent
REPS = {"tiny": 1, "small": 3, "full": 3}
IDLE_SECONDS = {"tiny": 2.0, "small": 5.0, "full": 8.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


async def measure(argv: list[str], env: dict[str, str], api: FakeBotApi, chat: int,
                  user: int, idle: float, cwd: Path, timeout: float = 120) -> dict[str, Any]:
    """Start a process, time it to the first message in `chat`, then read its idle RSS."""
    seen = len(api.to(chat))
    # Above every update_id in the generated inbox: the bot resumes after the last it stored.
    update_id = 50_000_000 + len(api.calls)
    api.push(report_update(chat, user, "楼道灯坏了，晚上很黑", 900_000 + seen), update_id)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        while len(api.to(chat)) <= seen:
            if proc.returncode is not None or time.perf_counter() - t0 > timeout:
                err = (await proc.stderr.read()).decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{argv[2]} handled nothing (exit {proc.returncode}): "
                                   f"{err}")
            await asyncio.sleep(0.005)
        first = time.perf_counter() - t0
        await asyncio.sleep(idle)
        rss, hwm = _rss_kib(proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return {"first_update_s": first, "rss_mib": rss / 1024, "peak_rss_mib": hwm / 1024}


def _idle_now(db: Path) -> None:
    """The generated timers are due from `gen.NOW` on, a fixed time; a real process runs on
    the wall clock, and a day later it would start by sweeping hundreds of due cases (about
    40 ms each), which is not the idle start this measures. Shift every next check by the
    time since `gen.NOW`, so that nothing falls due during the run."""
    shift = datetime.now(UTC) - NOW + timedelta(hours=1)

    def later(value: str | None) -> str | None:
        if value is None:
            return None
        return (datetime.fromisoformat(value) + shift).strftime("%Y-%m-%d %H:%M:%S.%f")

    conn = sqlite3.connect(db)
    try:
        conn.create_function("later", 1, later)
        conn.execute("UPDATE cases SET next_check_at = later(next_check_at) "
                     "WHERE next_check_at IS NOT NULL")
        conn.commit()
    finally:
        conn.close()


async def run(size: str, seed: int, *, idle: float | None = None) -> dict[str, Any]:
    n = SIZES[size][-1]
    g = await generate(n, seed)
    api = FakeBotApi(enforce_limits=False)
    url = await api.start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("GRIDBOT_")}
    base["PYTHONPATH"] = str(ROOT)
    out: dict[str, list[dict[str, Any]]] = {"gridbot": [], "bare": []}
    try:
        with tempfile.TemporaryDirectory(prefix="gridbot-startup-") as tmp:
            folder = Path(tmp)
            registry = folder / "registry.yaml"
            registry.write_text(yaml.safe_dump(registry_dict(), allow_unicode=True), "utf-8")
            db = folder / "startup.db"
            for rep in range(REPS[size]):
                # Bare bot first in even rounds, Gridbot first in odd ones.
                order = ["bare", "gridbot"] if rep % 2 == 0 else ["gridbot", "bare"]
                for who in order:
                    if who == "bare":
                        argv = [sys.executable, "-m", "bench.floor_bot", "--api", url,
                                "--token", TOKEN]
                        env = base
                        chat, user = -4_000_000_000 - rep, 7_000_000 + rep
                    else:
                        shutil.copy(make_url(g.url).database or "", db)
                        for suffix in ("-wal", "-shm"):
                            Path(f"{db}{suffix}").unlink(missing_ok=True)
                        _idle_now(db)
                        argv = [sys.executable, "-m", "bot.cli", "run", "--registry",
                                str(registry)]
                        env = {**base, "GRIDBOT_BOT_TOKEN": TOKEN, "GRIDBOT_API_URL": url,
                               "GRIDBOT_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
                               "GRIDBOT_LISTEN": f"127.0.0.1:{_free_port()}"}
                        chat, user = building_chat(3), resident(3, 2 + rep)
                    out[who].append(await measure(argv, env, api, chat, user,
                                                  idle or IDLE_SECONDS[size], folder))
    finally:
        await api.stop()
    summary: dict[str, Any] = {"cases": n, "runs": out}
    for key in ("first_update_s", "rss_mib", "peak_rss_mib"):
        gb = statistics.median(r[key] for r in out["gridbot"])
        bare = statistics.median(r[key] for r in out["bare"])
        summary[key] = {"gridbot": gb, "bare": bare, "ratio": gb / bare if bare else None}
    return summary


def main() -> None:
    ap = base_parser("Start-up time and idle RSS of gridbot run beside a bare aiogram bot")
    args = ap.parse_args()
    if args.database_url:
        print("bench.startup runs on the generated SQLite database only", file=sys.stderr)
    s = asyncio.run(run(args.size, args.seed))
    rows = []
    for key, label in (("first_update_s", "start → first update handled (s)"),
                       ("rss_mib", "idle RSS (MiB)"), ("peak_rss_mib", "peak RSS (MiB)")):
        r = s[key]
        goal = key != "peak_rss_mib"
        rows.append({"measure": label, "gridbot": r["gridbot"], "bare aiogram": r["bare"],
                     "ratio": f"{r['ratio']:.2f}×" if r["ratio"] else "–",
                     "goal": "≤ 1.10×" if goal else "(shown)",
                     "met": (r["ratio"] is not None and r["ratio"] <= 1.10) if goal else None})
    report(f"Start-up and idle memory, {s['cases']:,} cases (median of "
           f"{len(s['runs']['gridbot'])})",
           markdown_table(rows, ["measure", "gridbot", "bare aiogram", "ratio", "goal", "met"]),
           [f"Command: python3 -m bench.startup --size {args.size}"])
    write_json(args.json_path, {"machine": machine(), "size": args.size, **s})


if __name__ == "__main__":
    main()
