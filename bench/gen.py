"""Seeded generator of a big Gridbot database: N cases in a 50-grid district.

The schema is made by the product (`storage.db.create_schema`), the registry loaded by the
product (`bot.org.registry.apply_registry`); only the history (people, cases, their events, timer
steps, photos, outbox and inbox rows) is written here, in bulk, past the ORM:
- SQLite: `sqlite3.executemany` with `PRAGMA synchronous=OFF`;
- PostgreSQL: asyncpg `copy_records_to_table`, then `ANALYZE` (what autovacuum would do).

Shape (seeded, so the same size and seed give the same database):
- 10% of cases open: 2% of those verifying, 15% open, 58% accepted, 5% assigned, 20% resolved
  waiting for a rating. Of the handled ones 90% are early in their time (green), 7% past the
  due-soon point (reminder already taken), 3% overdue by up to 20 h (alerts taken, not yet
  escalated). Every open case's next check lies after `NOW`: at `NOW` nothing is due.
- 90% closed (6% of them rejected), reported over the past `max(30, N/900)` days with their
  audit events; their outbox rows only for the last 90 days (the sweep prunes older ones);
  done inbox rows of the last 7 days (the sweep prunes older ones).

`python3 -m bench.gen --size full` builds (or reuses) the cached SQLite files and prints the
time each took.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bot.cases.deadlines import Phase, StepName, next_check, pending_steps
from bot.cases.registry_edit import apply_registry
from bot.clock import ManualClock
from bot.org.policy import Policy
from bot.org.registry import parse_registry
from storage.db import create_schema, head_revision, make_engine, make_sessionmaker
from storage.models import Case, Node, OrgSettings
from tests.e2e import building_chat, district, head, leader, resident
from tests.harness import empty_database

# 2026-11-23 10:00 in Shanghai: the moment the generated database stands at.
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
GRIDS = 50
GEN_VERSION = 1
SIZES: dict[str, list[int]] = {"tiny": [1_000], "small": [10_000, 100_000],
                               "full": [10_000, 100_000, 1_000_000]}
CACHE = Path(tempfile.gettempdir()) / "gridbot-bench"
# (code, zh, en, sla, urgent, weight)
CATEGORIES = [
    ("other", "其他", "Other", "72h", False, 20),
    ("facility", "市政设施", "Public facilities", "7d", False, 30),
    ("sanitation", "环境卫生", "Sanitation", "48h", False, 30),
    ("planning", "规划建设", "Planning", "30d", False, 15),
    ("fire", "消防安全", "Fire safety", "4h", True, 5),
]
BATCH = 20_000


def registry_dict(grids: int = GRIDS) -> dict[str, Any]:
    reg = district(grids)
    reg["categories"] = [{"code": c, "name": {"zh_CN": zh, "en": en}, "sla": sla,
                          **({"urgent": True} if urgent else {})}
                         for c, zh, en, sla, urgent, _ in CATEGORIES]
    return reg


def _sla(text: str) -> timedelta:
    unit = {"h": 3600, "d": 86400}[text[-1]]
    return timedelta(seconds=int(text[:-1]) * unit)


CASE_DEFAULTS: dict[str, Any] = {"checked_at": None, "request_at": None, "review_at": None,
                                 "whistle_due_at": None, "whistle_acked_at": None,
                                 "extended_seconds": 0,
                                 "extension_count": 0, "checked": None}


@dataclass
class Rows:
    """The rows of each table, as column tuples in the order of `COLUMNS`."""

    people: list[tuple[Any, ...]] = field(default_factory=list)
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    case_events: list[tuple[Any, ...]] = field(default_factory=list)
    case_timer_steps: list[tuple[Any, ...]] = field(default_factory=list)
    case_photos: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    inbox: list[tuple[Any, ...]] = field(default_factory=list)

    def size(self) -> int:
        return sum(len(v) for v in vars(self).values())


COLUMNS: dict[str, Sequence[str]] = {
    "people": ("id", "name", "dm_ok", "building_id", "unit_id", "created_at"),
    "cases": ("id", "status", "rev", "level", "category", "urgent", "verified", "building_id",
              "unit_id", "reporter_id", "submitted_by_id", "description", "source_chat_id",
              "source_message_id", "reported_at", "clock_started_at", "deadline_at",
              "assignee_id", "accepted_by_id", "result", "resolved_at", "resolved_by_id",
              "rating", "closed_at", "close_reason", "reject_reason", "next_check_at", "round"),
    "case_events": ("id", "case_id", "at", "actor_id", "action", "from_status", "to_status",
                    "note"),
    "case_timer_steps": ("id", "case_id", "round", "step", "n", "basis", "at"),
    "case_photos": ("id", "case_id", "file_id", "kind"),
    "outbox": ("id", "dedupe_key", "chat_id", "person_id", "case_id", "text", "photos",
               "buttons", "kind", "status", "not_before", "attempts", "parts_done",
               "created_at", "sent_at", "sent_message_id"),
    "inbox": ("id", "update_id", "kind", "payload", "status", "attempts", "received_at"),
}
DATETIME_COLUMNS = {"created_at", "reported_at", "clock_started_at", "deadline_at",
                    "resolved_at", "closed_at", "next_check_at", "at", "basis", "not_before",
                    "sent_at", "received_at"}
JSON_COLUMNS = {"photos", "buttons", "payload"}
DESCRIPTIONS = ["楼道灯坏了，晚上很黑", "垃圾桶满了没人清理", "消防通道被电动车堵住",
                "小区门口路面塌陷", "楼上漏水到我家", "路灯不亮", "绿化带杂草丛生",
                "电梯经常停运", "下水道堵塞有异味", "违章搭建占用公共空间"]


@dataclass
class Generated:
    url: str
    n: int
    seed: int
    counts: dict[str, int]
    seconds: float
    cached: bool


class _Gen:
    def __init__(self, n: int, seed: int, policy: Policy, buildings: dict[int, int],
                 first_case_id: int = 1) -> None:
        self.rng = random.Random(seed)
        self.n = n
        self.policy = policy
        self.buildings = buildings  # grid index -> building node id
        self.rows = Rows()
        self.ids = {t: 0 for t in COLUMNS}
        self.case_id = first_case_id - 1
        # tests.e2e.resident(i, k) leaves room for 1,000 residents a grid; at 1M cases that
        # is 20 cases each over the generated years.
        self.residents_per_grid = min(999, max(4, n // 10 // GRIDS))
        self.cats = [(c, _sla(sla), urgent) for c, _, _, sla, urgent, _ in CATEGORIES]
        self.weights = [w for *_, w in CATEGORIES]
        self.span = timedelta(days=max(30.0, n / 900))
        self.msg = 0

    def _next(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def people(self) -> None:
        for i in range(GRIDS):
            for k in range(self.residents_per_grid):
                self.rows.people.append((resident(i, k), f"居民{i}-{k}", True,
                                         self.buildings[i], None, NOW - self.span))

    def event(self, case_id: int, at: datetime, actor: int | None, action: str,
              frm: str | None, to: str | None, note: str | None = None) -> None:
        at = min(at, NOW)
        self.rows.case_events.append((self._next("case_events"), case_id, at, actor, action,
                                      frm, to, note))

    def out(self, key: str, chat: int, person: int | None, case_id: int, text: str,
            at: datetime, status: str = "sent", buttons: str = "[]") -> None:
        self.msg += 1
        sent = at if status == "sent" else None
        self.rows.outbox.append((self._next("outbox"), key, chat, person, case_id, text, "[]",
                                 buttons, "", status, at, 1 if sent else 0, 0, at, sent,
                                 self.msg if sent else None))

    def case(self, open_: bool) -> None:
        rng = self.rng
        self.case_id += 1
        cid = self.case_id
        grid = rng.randrange(GRIDS)
        reporter = resident(grid, rng.randrange(self.residents_per_grid))
        code, sla, urgent = rng.choices(self.cats, self.weights)[0]
        bld = self.buildings[grid]
        lead, bhead, chat = leader(grid), head(grid), building_chat(grid)
        resolved_at = NOW
        if open_:
            status = rng.choices(["verifying", "open", "accepted", "assigned", "resolved"],
                                 [2, 15, 58, 5, 20])[0]
            if status == "verifying":
                window = min(sla, self.policy.verify_within or sla)
                start = NOW - window * rng.uniform(0.0, 0.7)
            elif status == "resolved":
                resolved_at = NOW - timedelta(days=3) * rng.uniform(0.05, 0.9)
                start = resolved_at - sla * rng.uniform(0.2, 0.9)
            else:
                r = rng.random()
                if r < 0.90:
                    frac = rng.uniform(0.05, 0.7)
                elif r < 0.97:
                    frac = rng.uniform(0.76, 0.99)
                else:
                    frac = 1 + rng.uniform(0.01, 20) * 3600 / sla.total_seconds()
                start = NOW - sla * frac
        else:
            status = "rejected" if rng.random() < 0.06 else "closed"
            start = NOW - self.span * rng.uniform(0.0, 1.0) - sla * 1.2 - timedelta(days=6)
        start = start.replace(microsecond=0)
        deadline = start + sla
        c: dict[str, Any] = dict(
            id=cid, status=status, rev=1, level="grid", category=code, urgent=urgent,
            verified="pending", building_id=bld, unit_id=None, reporter_id=reporter,
            submitted_by_id=reporter, description=rng.choice(DESCRIPTIONS), source_chat_id=chat,
            source_message_id=cid, reported_at=start, clock_started_at=start,
            deadline_at=deadline, assignee_id=None, accepted_by_id=None, result=None,
            resolved_at=None, resolved_by_id=None, rating=None, closed_at=None,
            close_reason=None, reject_reason=None, next_check_at=None, round=1)
        keep_outbox = open_ or start > NOW - timedelta(days=90)
        self.event(cid, start, reporter, "report", None, "verifying")
        if keep_outbox:
            self.out(f"case:{cid}:ack", chat, None, cid, f"已收到您的诉求 #{cid}", start)
            self.out(f"case:{cid}:verify:{bhead}", bhead, bhead, cid, f"待核实诉求 #{cid}", start,
                     buttons=json.dumps([[{"text": "属实", "callback_data": f"c1:vc:{cid}:1"}]]))
        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                self.rows.case_photos.append((self._next("case_photos"), cid,
                                              f"AgAC{cid:x}{rng.getrandbits(64):x}", "report"))
        t = start
        if status == "rejected":
            t += timedelta(minutes=rng.uniform(5, 100))
            self.event(cid, t, bhead, "reject", "verifying", "rejected", "不属实")
            c.update(verified="rejected", reject_reason="不属实", closed_at=t, rev=2)
        elif status != "verifying":
            t += timedelta(minutes=rng.uniform(5, 100))
            self.event(cid, t, bhead, "confirm", "verifying", "open")
            c.update(verified="confirmed", rev=2)
            if keep_outbox:
                self.out(f"case:{cid}:r1:card:{lead}", lead, lead, cid, f"新诉求 #{cid}", t)
            if status in ("accepted", "assigned", "resolved", "closed"):
                t += timedelta(minutes=rng.uniform(5, 200))
                self.event(cid, t, lead, "accept", "open", "accepted")
                c.update(accepted_by_id=lead, rev=3)
            if status == "assigned":
                t += timedelta(minutes=rng.uniform(5, 60))
                self.event(cid, t, lead, "assign", "accepted", "assigned")
                c.update(assignee_id=bhead, rev=4)
            if status in ("resolved", "closed"):
                if status == "resolved":
                    t = resolved_at
                else:
                    t += sla * rng.uniform(0.1, 1.1)
                self.event(cid, t, lead, "resolve", "accepted", "resolved", "已处理")
                c.update(result="已处理", resolved_at=t, resolved_by_id=lead, rev=4)
                if keep_outbox:
                    self.out(f"case:{cid}:r1:resolved:{reporter}", reporter, reporter, cid,
                             f"您的诉求 #{cid} 已办结", t)
                    self.out(f"case:{cid}:r1:resolved:group", chat, None, cid,
                             f"#{cid} 已办结", t)
            if status == "closed":
                t += timedelta(hours=rng.uniform(0.1, 60))
                rating = rng.choices(["good", "ok", "bad", None], [70, 20, 5, 5])[0]
                self.event(cid, t, reporter if rating else None,
                           "rate" if rating else "rating_timeout", "resolved", "closed")
                c.update(rating=rating, closed_at=t, rev=5,
                         close_reason="rated" if rating else "no_feedback")
        if open_:
            self._timers(c, lead)
        self.rows.cases.append(tuple(c[k] for k in COLUMNS["cases"]))

    def _timers(self, c: dict[str, Any], lead: int) -> None:
        """Steps due by NOW taken (recorded, with their messages); next check after NOW."""
        phase = {"verifying": Phase.VERIFY, "resolved": Phase.RATE}.get(c["status"],
                                                                         Phase.HANDLE)
        # Columns the generator leaves to their defaults (no extension, request, suspension,
        # check or whistle in generated cases) still exist on the case the timers read.
        view = SimpleNamespace(**{**CASE_DEFAULTS, **c})
        taken: set[tuple[str, int, datetime]] = set()
        for _ in range(8):
            due = [s for s in pending_steps(phase, view, self.policy, NOW, taken)  # type: ignore[arg-type]
                   if s.due_at <= NOW]
            if not due:
                break
            step = due[0]
            if step.name in (StepName.VERIFY_TIMEOUT, StepName.ESCALATE,
                             StepName.RATING_TIMEOUT):
                raise AssertionError(f"generated case #{c['id']} is past {step.name}")
            taken.add(step.key)
            self.rows.case_timer_steps.append((self._next("case_timer_steps"), c["id"], 1,
                                               step.name.value, step.n, step.basis,
                                               step.due_at))
            key = (f"case:{c['id']}:r1:{step.name.value}:{step.n}:"
                   f"{int(step.basis.timestamp())}:{lead}")
            self.out(key, lead, lead, c["id"], f"提醒 #{c['id']}", step.due_at)
            if step.name == StepName.OVERDUE:
                self.event(c["id"], step.due_at, None, "overdue", None, None, str(step.n))
        steps = pending_steps(phase, view, self.policy, NOW, taken)  # type: ignore[arg-type]
        nxt = next_check(steps, view, self.policy, NOW)  # type: ignore[arg-type]
        if nxt is None or nxt <= NOW:
            raise AssertionError(f"generated case #{c['id']} would be due at NOW")
        c["next_check_at"] = nxt

    def inbox(self) -> None:
        """Handled updates of the last 7 days (older ones are pruned by the sweep)."""
        per_day = max(1.0, self.n / self.span.days)
        count = int(per_day * 7 * 4)  # about four updates per case reported
        for k in range(count):
            at = NOW - timedelta(seconds=self.rng.uniform(0, 7 * 86400))
            self.rows.inbox.append((self._next("inbox"), 10_000_000 + k, "message", None, "done",
                                    1, at))

    def chunks(self) -> Iterator[Rows]:
        """All rows, in chunks of about BATCH cases (open cases last, most recent)."""
        self.people()
        yield self._take()
        n_open = self.n // 10
        n_closed = self.n - n_open
        done = 0
        while done < n_closed:
            for _ in range(min(BATCH, n_closed - done)):
                self.case(False)
                done += 1
            yield self._take()
        done = 0
        while done < n_open:
            for _ in range(min(BATCH, n_open - done)):
                self.case(True)
                done += 1
            yield self._take()
        self.inbox()
        yield self._take()

    def _take(self) -> Rows:
        rows, self.rows = self.rows, Rows()
        return rows


def _sqlite_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in DATETIME_COLUMNS:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if column in JSON_COLUMNS:
        return value if isinstance(value, str) else json.dumps(value)
    return value


def _cache_path(n: int, seed: int) -> Path:
    # Keyed by the schema's head too: a file made at an older revision would be upgraded by
    # every run that starts on a copy of it, and the upgrade timed with the run.
    return CACHE / f"gen-v{GEN_VERSION}-r{head_revision()}-n{n}-s{seed}.db"


async def _prepare(url: str) -> tuple[Policy, dict[int, int]]:
    """The product's schema and the registry, loaded by the product."""
    engine = make_engine(url)
    try:
        await create_schema(engine)
        sessions = make_sessionmaker(engine)
        async with sessions() as db:
            reg = parse_registry(yaml.safe_dump(registry_dict(), allow_unicode=True))
            await apply_registry(db, reg, ManualClock(NOW - timedelta(days=2000)))
        async with sessions() as db:
            row = await db.get(OrgSettings, 1)
            assert row is not None
            policy = Policy.from_row(row)
            nodes = {code: nid for code, nid in (await db.execute(
                select(Node.code, Node.id).where(Node.kind == "building"))).all()}
    finally:
        await engine.dispose()
    return policy, {i: nodes[f"G{i:02d}-B"] for i in range(GRIDS)}


def _write_sqlite(path: Path, chunks: Iterator[Rows]) -> dict[str, int]:
    counts = dict.fromkeys(COLUMNS, 0)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    try:
        for rows in chunks:
            conn.execute("BEGIN")
            for table, cols in COLUMNS.items():
                data = getattr(rows, table)
                if not data:
                    continue
                conv = [(i, c) for i, c in enumerate(cols)
                        if c in DATETIME_COLUMNS or c in JSON_COLUMNS]
                if conv:
                    fixed = []
                    for row in data:
                        r = list(row)
                        for i, c in conv:
                            r[i] = _sqlite_value(c, r[i])
                        fixed.append(r)
                    data = fixed
                marks = ",".join("?" * len(cols))
                conn.executemany(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})",
                                 data)
                counts[table] += len(data)
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return counts


async def _write_pg(url: str, chunks: Iterator[Rows]) -> dict[str, int]:
    import asyncpg  # type: ignore[import-untyped]

    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host,
                                 port=u.port, database=u.database)
    counts = dict.fromkeys(COLUMNS, 0)
    try:
        for rows in chunks:
            async with conn.transaction():
                for table, cols in COLUMNS.items():
                    data = getattr(rows, table)
                    if not data:
                        continue
                    ji = [i for i, c in enumerate(cols) if c in JSON_COLUMNS]
                    if ji:
                        data = [tuple(json.dumps(v) if i in ji and v is not None
                                      and not isinstance(v, str) else v
                                      for i, v in enumerate(r)) for r in data]
                    await conn.copy_records_to_table(table, records=data, columns=list(cols))
                    counts[table] += len(data)
        # COPY with explicit ids leaves the sequences behind; the product inserts next.
        for table in COLUMNS:
            if table == "people":
                continue
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT coalesce(max(id), 1) FROM {table}))")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return counts


async def _pg_has(url: str, n: int) -> bool:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(select(func.count()).select_from(Case))
            top = await conn.scalar(select(func.max(Case.reported_at)))
            at = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return count == n and top is not None and at == head_revision()
    except Exception:
        return False
    finally:
        await engine.dispose()


async def generate(n: int, seed: int = 8, database_url: str | None = None, *,
                   reuse: bool = True) -> Generated:
    """A database of `n` cases. SQLite (no URL): a cached file under the temp dir, keyed by
    size, seed and generator version. PostgreSQL: the database at `database_url`, emptied and
    filled (kept if it already holds `n` cases and `reuse`)."""
    t0 = time.perf_counter()
    if database_url is None or database_url.startswith("sqlite"):
        path = _cache_path(n, seed) if database_url is None else Path(
            make_url(database_url).database or "")
        url = f"sqlite+aiosqlite:///{path}"
        if reuse and path.exists():
            return Generated(url, n, seed, {}, 0.0, True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.part")  # two processes may build it at once
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        tmp_url = f"sqlite+aiosqlite:///{tmp}"
        policy, buildings = await _prepare(tmp_url)
        gen = _Gen(n, seed, policy, buildings)
        counts = await asyncio.to_thread(_write_sqlite, tmp, gen.chunks())
        shutil.move(tmp, path)
        return Generated(url, n, seed, counts, time.perf_counter() - t0, False)
    if reuse and await _pg_has(database_url, n):
        return Generated(database_url, n, seed, {}, 0.0, True)
    await empty_database(database_url)
    policy, buildings = await _prepare(database_url)
    gen = _Gen(n, seed, policy, buildings)
    counts = await _write_pg(database_url, gen.chunks())
    return Generated(database_url, n, seed, counts, time.perf_counter() - t0, False)


def main() -> None:
    from bench.common import base_parser, machine, markdown_table, report, write_json

    ap = base_parser("Generate (or reuse) benchmark databases")
    ap.add_argument("--fresh", action="store_true", help="regenerate even if cached")
    args = ap.parse_args()
    results = []
    for n in SIZES[args.size]:
        g = asyncio.run(generate(n, args.seed, args.database_url, reuse=not args.fresh))
        results.append({"cases": n, "url": g.url, "cached": g.cached,
                        "seconds": round(g.seconds, 1), "rows": sum(g.counts.values()),
                        **g.counts})
    headers = ["cases", "cached", "seconds", "rows", *COLUMNS]
    report("Generated databases", markdown_table(results, headers))
    write_json(args.json_path, {"machine": machine(), "results": results})


if __name__ == "__main__":
    main()
