"""Loading the registry (issue 20, defects 12, 13 and 14): two workers loading it at once on a
new database, its geography (GeoJSON altitudes, overlapping grids), and an explicit null kept
on the first load as on every later one.

Runs on SQLite, and on PostgreSQL when GRIDBOT_TEST_DATABASE_URL names a server (the race of
defect 12 needs it to be a race: two real connections)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cli import _load_registry, main
from bot.config import Settings
from bot.ledger import digest
from bot.org import geo
from bot.org.directory import directory
from bot.org.policy import Policy
from bot.org.registry import RegistryError, parse_registry
from storage.db import SCHEMA_LOCK, create_schema, make_engine, make_sessionmaker
from storage.models import Category, Node, OrgSettings, Person, Role
from tests.harness import ROOT, SAMPLE, fresh_database, isolate_env

SAMPLE_TEXT = SAMPLE.read_text("utf-8")


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, bot_token=None, _env_file=None)  # type: ignore[call-arg]


async def table_counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            return {m.__tablename__: int(await db.scalar(select(func.count()).select_from(m))
                                         or 0)
                    for m in (Node, Person, Role, Category, OrgSettings)}
    finally:
        await engine.dispose()


# --- defect 12: two workers started together with --registry ----------------------------------


async def test_two_loads_at_once_on_a_new_database(tmp_path: Path) -> None:
    """`gridbot run --registry FILE` twice at once on a new database: each worker creates
    the schema (one waits for the other) and loads the registry. The second load waits for
    the first and finds its rows, instead of inserting the same places again and dying on
    nodes_code_key. Several rounds: the race is a matter of timing."""
    once: dict[str, int] | None = None
    for round_ in range(3):
        url = await fresh_database(tmp_path, f"race{round_}.db")  # a new database each round
        settings = settings_for(url)
        results = await asyncio.gather(_load_registry(settings, SAMPLE),
                                       _load_registry(settings, SAMPLE),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert not failed, f"a worker died: {failed[0]!r}"
        assert all(str(r).startswith("registry loaded from") for r in results)
        counts = await table_counts(url)
        once = once or counts
        assert counts == once
    assert once is not None and once["nodes"] > 0 and once["org_settings"] == 1
    # The same as one load alone.
    alone = await fresh_database(tmp_path, "alone.db")
    await _load_registry(settings_for(alone), SAMPLE)
    assert await table_counts(alone) == once


async def _hold_schema_lock(engine: AsyncEngine, held: asyncio.Event,
                            release: asyncio.Event) -> None:
    """What a worker migrating the schema holds: the schema lock on PostgreSQL, the write
    lock on SQLite (every write transaction of the app's engine begins IMMEDIATE)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        else:
            await conn.execute(text("SELECT 1"))
        held.set()
        await release.wait()


async def test_a_load_waits_for_the_schema_lock(tmp_path: Path) -> None:
    """A registry load takes the lock migrations take: while another worker holds it (it is
    creating or upgrading the schema, or loading the registry), the load waits, then goes on
    and succeeds."""
    url = await fresh_database(tmp_path, "lock.db")
    engine = make_engine(url)
    try:
        await create_schema(engine)
        held, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold_schema_lock(engine, held, release))
        await held.wait()
        load = asyncio.create_task(_load_registry(settings_for(url), SAMPLE))
        await asyncio.sleep(0.5)
        assert not load.done(), "the load went ahead while the schema lock was held"
        release.set()
        await holder
        assert (await asyncio.wait_for(load, 30)).startswith("registry loaded from")
    finally:
        await engine.dispose()
    assert (await table_counts(url))["nodes"] > 0


async def test_a_new_sqlite_file_opened_by_two_at_once(tmp_path: Path) -> None:
    """Turning a new SQLite file to WAL takes an exclusive lock SQLite does not wait for:
    the second of two workers opening it at once failed at once with "database is locked"
    (one round in ten of the test above). A connection now waits for the lock, and the
    event loop goes on meanwhile."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another worker, making the schema
    other.execute("CREATE TABLE made_by_the_other (a)")

    async def the_other_commits() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        commit = asyncio.create_task(the_other_commits())
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert commit.done()
    finally:
        await engine.dispose()
        other.close()


# --- defect 13: geography ----------------------------------------------------------------------

# The sample's two grids (WGS-84 here), sharing the edge at lon 117.303.
B1 = [[117.290, 31.790], [117.303, 31.790], [117.303, 31.810], [117.290, 31.810]]
B2 = [[117.303, 31.790], [117.316, 31.790], [117.316, 31.810], [117.303, 31.810]]


def with_boundaries(b1: Any, b2: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SAMPLE_TEXT)
    for grid in data["streets"][0]["communities"][0]["grids"]:
        if grid["code"] == "BSY-01":
            grid["boundary"] = b1
        elif grid["code"] == "BSY-02":
            grid["boundary"] = b2
    return data


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True)


def problems(data: dict[str, Any], base: Path | None = None) -> str:
    with pytest.raises(RegistryError) as info:
        parse_registry(dump(data), base)
    return "\n".join(info.value.problems)


def closed(ring: list[list[float]], z: float | None = 0.0) -> list[list[float]]:
    """A GeoJSON linear ring (closed), each position with an altitude when `z` is given."""
    return [[*p, z] if z is not None else list(p) for p in [*ring, ring[0]]]


@pytest.mark.parametrize("geometry", [
    {"type": "Polygon", "coordinates": [closed(B1)]},
    {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                      "coordinates": [closed(B1, 12.5)]}},
    {"type": "MultiPolygon", "coordinates": [[closed(B1)]]},
])
async def test_a_geojson_boundary_with_altitudes_loads(tmp_path: Path,
                                                       geometry: dict[str, Any]) -> None:
    """RFC 7946 positions may carry an altitude, [lon, lat, 0], as exports from GIS tools
    do: the boundary loads, without it, and routes as the same boundary in 2D would."""
    (tmp_path / "BSY-01.geojson").write_text(json.dumps(geometry), encoding="utf-8")
    data = with_boundaries(None, B2)
    grid = data["streets"][0]["communities"][0]["grids"][0]
    del grid["boundary"]
    grid["boundary_file"] = "BSY-01.geojson"
    registry = tmp_path / "district.yaml"
    registry.write_text(dump(data), encoding="utf-8")
    url = await fresh_database(tmp_path, "geo.db")
    assert (await _load_registry(settings_for(url), registry)).startswith("registry loaded")
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            d = await directory(db)
    finally:
        await engine.dispose()
    stored = d.by_code["BSY-01"].boundary
    points = stored if geo.is_ring(stored) else [p for poly in stored for ring in poly
                                                  for p in ring]
    assert points and all(len(p) == 2 for p in points)
    found = geo.router(d).grid_at(117.295, 31.800)
    assert found is not None and found.code == "BSY-01"
    # A position still needs a longitude and a latitude, numbers.
    for bad in ([117.29], [117.29, "31.79", 0], [117.29, 31.79, True]):
        broken = json.loads(json.dumps(geometry))
        inner = broken.get("geometry", broken)
        ring = inner["coordinates"][0] if inner["type"] == "Polygon" else \
            inner["coordinates"][0][0]
        ring[1] = bad
        (tmp_path / "BSY-01.geojson").write_text(json.dumps(broken), encoding="utf-8")
        assert "boundary_file" in problems(data, tmp_path)


def overlap_of(found: str) -> float:
    match = re.search(r"overlaps .*?([\d,]+) m²", found)
    assert match, found
    return float(match.group(1).replace(",", ""))


def test_overlapping_grids_are_refused() -> None:
    """A point in the overlap of two grids went to whichever came first: the load refuses
    an overlap of more than a few square metres, naming both grids and its area."""
    # BSY-02 starts 0.001° (about 95 m) west of BSY-01's east edge, over 0.02° (2.2 km).
    b2 = [[117.302, 31.790], [117.316, 31.790], [117.316, 31.810], [117.302, 31.810]]
    found = problems(with_boundaries(B1, b2))
    assert "BSY-01" in found and "BSY-02" in found, found
    assert "communities[0].grids[1].boundary" in found and "line " in found
    width = geo.metres(31.800, 117.302, 31.800, 117.303)
    height = geo.metres(31.790, 117.302, 31.810, 117.302)
    assert overlap_of(found) == pytest.approx(width * height, rel=0.01)
    # Ten times that sliver (about 21 m²) is refused.
    sliver = [[117.303 - 1e-7, 31.790], [117.316, 31.790], [117.316, 31.810],
              [117.303 - 1e-7, 31.810]]
    assert 15 < overlap_of(problems(with_boundaries(B1, sliver))) < 30
    # One grid inside the other is the largest overlap of all.
    inner = [[117.292, 31.792], [117.296, 31.792], [117.296, 31.796], [117.292, 31.796]]
    found = problems(with_boundaries(B1, inner))
    assert "BSY-01" in found and "BSY-02" in found
    # The sample in GCJ-02 coordinates: the same overlap, measured on the converted boundaries.
    data = with_boundaries(B1, b2)
    data["crs"] = "gcj02"
    assert overlap_of(problems(data)) == pytest.approx(width * height, rel=0.02)


def test_overlapping_grids_are_refused_by_the_command(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", asyncio.run(fresh_database(tmp_path, "c.db")))
    b2 = [[117.302, 31.790], [117.316, 31.790], [117.316, 31.810], [117.302, 31.810]]
    registry = tmp_path / "district.yaml"
    registry.write_text(dump(with_boundaries(B1, b2)), encoding="utf-8")
    assert main(["registry", "load", str(registry)]) == 1
    err = capsys.readouterr().err
    assert "registry rejected" in err and "BSY-01" in err and "BSY-02" in err and "m²" in err


@pytest.mark.parametrize("b2", [
    B2,  # a shared edge
    [[117.303, 31.810], [117.316, 31.810], [117.316, 31.830], [117.303, 31.830]],  # a corner
    # A sliver where two surveys disagree by 1e-8° (about a millimetre) along the whole
    # 2.2 km edge: about 2 m², under the 10 m² a load refuses.
    [[117.303 - 1e-8, 31.790], [117.316, 31.790], [117.316, 31.810], [117.303 - 1e-8, 31.810]],
    None,  # a grid without a boundary overlaps nothing
])
def test_touching_grids_and_slivers_are_fine(b2: Any) -> None:
    model = parse_registry(dump(with_boundaries(B1, b2)))
    grids = model.streets[0].communities[0].grids
    assert grids[0]._wgs is not None


# --- defect 14: null turns it off, on the first load too ---------------------------------------


def null_keys() -> list[str]:
    """The policy keys docs/registry.md documents as turned off by null: its policy table's
    rows whose meaning says what `null` does."""
    docs = (ROOT / "docs" / "registry.md").read_text("utf-8")
    section = docs.split("\n## policy\n", 1)[1].split("\n## ", 1)[0]
    keys = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]) and "`null`" in cells[3]:
            keys.append(cells[0].strip("`"))
    return keys


# Where each key's null is stored, when it is not a column of its own name.
COLUMNS = {"quiet_hours": ("quiet_start", "quiet_end")}
# What the Policy holds of each key, when not a field of its own name; the digest's time is
# read by the digest from the org settings, not the Policy.
POLICY_FIELDS = {"quiet_hours": ("quiet_start", "quiet_end"), "digest_at": ()}


def test_the_documented_null_keys() -> None:
    """The list the test below covers is read from the docs: every timer, the quiet hours,
    the workflow's timers, the digest and the 是同一问题 question."""
    assert set(null_keys()) >= {
        "verify_within", "remind_at", "overdue_repeat", "escalate_after", "rating_within",
        "quiet_hours", "extension_answer_within", "check_within", "whistle_ack_within",
        "digest_at", "duplicate_window"}


def nulled(keys: list[str]) -> str:
    data: dict[str, Any] = yaml.safe_load(SAMPLE_TEXT)
    for key in keys:
        data["policy"][key] = None
    return dump(data)


async def stored_settings(url: str) -> tuple[OrgSettings, Policy]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            row = await db.get(OrgSettings, 1)
            assert row is not None
            working = (await db.scalars(select(Category.code)
                                        .where(Category.sla_unit != ""))).all()
            return row, Policy.from_row(row, working)
    finally:
        await engine.dispose()


def test_null_turns_it_off_on_the_first_load(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`gridbot registry load` of a registry that sets every "null: off" key to null, into a
    new database: each is stored as NULL and is off in the Policy (and no digest is owed),
    on the first load as on the second. The first used to store the columns' defaults for
    duplicate_window (3d) and digest_at (08:30)."""
    keys = null_keys()
    isolate_env(monkeypatch, tmp_path)
    url = asyncio.run(fresh_database(tmp_path, "null.db"))
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", url)
    registry = tmp_path / "district.yaml"
    registry.write_text(nulled(keys), encoding="utf-8")
    # 09:00 in Shanghai, after the default digest time.
    morning = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    for load in ("first", "second"):
        assert main(["registry", "load", str(registry)]) == 0, load
        row, policy = asyncio.run(stored_settings(url))
        for key in keys:
            for column in COLUMNS.get(key, (key,)):
                assert getattr(row, column) is None, f"{load} load: {column} is " \
                                                     f"{getattr(row, column)!r}, not null"
            for name in POLICY_FIELDS.get(key, (key,)):
                assert getattr(policy, name) is None, f"{load} load: Policy.{name}"
        assert policy.quiet_until(morning - timedelta(hours=3)) is None  # 06:00: not quiet
        assert [j.name for j in digest.jobs_due(row, morning, digest._Done())
                if j.name == "digest"] == [], f"{load} load: a digest is owed"
        # What null does not touch keeps its value.
        assert row.max_extensions == 1 and row.duplicate_radius == 50.0
