"""`gridbot db copy`: every row of one Gridbot database into another, new one.

For moving a district from the SQLite default to PostgreSQL. The bot is stopped meanwhile;
the copy reads the source in one transaction (a consistent snapshot) and writes the target in
one, so a copy that fails leaves the target as empty as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.db import create_schema
from storage.models import Base

BATCH = 1000


class CopyRefused(Exception):
    """The target is not an empty Gridbot database; nothing was written."""


@dataclass
class CopyReport:
    rows: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        total = sum(self.rows.values())
        counts = ", ".join(f"{name} {n}" for name, n in self.rows.items() if n)
        return (f"copied {total} rows of {len(self.rows)} tables ({counts or 'all empty'}); "
                f"point GRIDBOT_DATABASE_URL at the new database before starting Gridbot")


def _parents_first(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a table that refers to itself (places and their parent places), each after the
    row it points at, so the target's foreign keys hold at every insert."""
    refs = [(fk.parent.name, fk.column.name) for fk in table.foreign_keys
            if fk.column.table is table]
    if not refs:
        return list(rows)
    child, key = refs[0]
    placed: set[Any] = set()
    waiting = list(rows)
    ordered: list[dict[str, Any]] = []
    while waiting:
        ready = [r for r in waiting if r[child] is None or r[child] in placed]
        if not ready:  # a cycle: the source's own foreign keys would not have allowed it
            raise CopyRefused(f"rows of {table.name} refer to each other in a circle")
        ordered += ready
        placed.update(r[key] for r in ready)
        ready_ids = {id(r) for r in ready}
        waiting = [r for r in waiting if id(r) not in ready_ids]
    return ordered


def _tables_with_rows(conn: Connection) -> list[str]:
    return [t.name for t in Base.metadata.sorted_tables
            if conn.execute(select(func.count()).select_from(t)).scalar_one()]


def _reset_sequences(conn: Connection) -> None:
    # Rows came with their ids; PostgreSQL's sequences still stand at 1.
    for table in Base.metadata.sorted_tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer) or pk[0].autoincrement is False:
            continue
        conn.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
            f"COALESCE((SELECT MAX({pk[0].name}) FROM {table.name}), 0) + 1, false)"))


async def _copy_table(source: AsyncConnection, target: AsyncConnection, table: Table,
                      batch: int) -> int:
    query = select(table).order_by(*table.primary_key.columns)
    self_ref = any(fk.column.table is table for fk in table.foreign_keys)
    count = 0
    if self_ref:
        # Such tables are the registry's places: small enough to order in memory.
        rows = _parents_first(table, [dict(r) for r in (await source.execute(query)).mappings()])
        for start in range(0, len(rows), batch):
            await target.execute(insert(table), rows[start:start + batch])
        return len(rows)
    result = await source.stream(query)
    async for part in result.mappings().partitions(batch):
        await target.execute(insert(table), [dict(r) for r in part])
        count += len(part)
    return count


async def copy_database(source: AsyncEngine, target: AsyncEngine, *,
                        batch: int = BATCH) -> CopyReport:
    """Copy every row of `source` into `target`, which is made (or must already be) an empty
    database at the newest schema. Both are brought to the newest schema first, as at start."""
    await create_schema(source)
    await create_schema(target, upgrade=True)
    report = CopyReport()
    async with source.connect() as src, target.begin() as dst:
        if busy := await dst.run_sync(_tables_with_rows):
            raise CopyRefused(f"the target database already holds rows (in {', '.join(busy)}): "
                              f"copy only into a new, empty database")
        for table in Base.metadata.sorted_tables:
            report.rows[table.name] = await _copy_table(src, dst, table, batch)
        if dst.dialect.name == "postgresql":
            await dst.run_sync(_reset_sequences)
        await src.rollback()
    return report
