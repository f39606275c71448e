"""Engine and session factory, and the schema's Alembic migrations (storage/migrations).

SQLite is the embedded default, PostgreSQL the production one.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.util import await_only

from storage.models import Base

if TYPE_CHECKING:
    # Alembic is imported where a schema is looked at or changed, not at every start: the
    # start on a database already at the head is one query (`_at_head`), and Alembic's
    # import would add ~12.6 MiB and ~0.17 s to it.
    from alembic.config import Config
    from alembic.script import ScriptDirectory


def make_engine(url: str) -> AsyncEngine:
    # A database error's text would otherwise carry the statement's values (what residents
    # wrote, their ids) into tracebacks and logs.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if url.startswith("sqlite"):
        if ":memory:" in url or url.rstrip("/").endswith("sqlite+aiosqlite:"):
            # One shared connection, or every session would see its own empty database.
            kwargs["poolclass"] = StaticPool
        kwargs["connect_args"] = {"timeout": 30}
    try:
        engine = create_async_engine(url, **kwargs)
    except ImportError as exc:
        # The URL is fine but its driver is not installed: one line for the CLI, not a
        # traceback from deep in SQLAlchemy.
        raise ArgumentError(f"its driver {exc.name or ''} is not installed (for PostgreSQL: "
                            "pip install -e '.[postgres]')") from exc
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            conn.isolation_level = None  # we emit BEGIN ourselves, below
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            _journal_wal(cur)
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            if conn.get_execution_options().get(READ_ONLY):
                # A long read (read_only below): a snapshot, no lock; and no writes, so a
                # mistaken one fails at once instead of upgrading to the write lock. The
                # pool's reset below lifts query_only before anyone else gets the connection.
                conn.exec_driver_sql("PRAGMA query_only=ON")
                conn.connection.info[READ_ONLY] = True
                conn.exec_driver_sql("BEGIN")
                return
            # Take the write lock when a transaction starts: SQLite has one writer at a time,
            # and a reader that later tries to write fails at once if another wrote meanwhile.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine.sync_engine.pool, "reset")
        def _writable_again(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry,
                            _state: Any) -> None:
            if record.info.pop(READ_ONLY, False):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA query_only=OFF")
                cur.close()

    return engine


# How long a connection waits to turn a new SQLite file to WAL while another holds it: as long
# as the busy timeout waits for a lock.
WAL_WAIT = 30.0


def _journal_wal(cur: Any) -> None:
    """PRAGMA journal_mode=WAL, waiting for the file's lock. Turning a new file to WAL takes
    an exclusive lock that SQLite does not wait for (no busy handler): two workers opening
    one new database at once, the second failed with "database is locked" (issue 20,
    defect 12). A file already in WAL needs no lock, and nothing waits."""
    deadline = time.monotonic() + WAL_WAIT
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        # Connections are made inside the async engine's greenlet: the event loop goes on.
        await_only(asyncio.sleep(pause))
        pause = min(pause * 2, 0.1)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# The execution option that makes a SQLite transaction begin as a reader (see _begin below).
READ_ONLY = "gridbot_read_only"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for long reads (figures, exports, listings): on SQLite its
    transactions begin DEFERRED (a reader in WAL mode never blocks the one writer, nor waits
    for it); on PostgreSQL they are READ ONLY and REPEATABLE READ (one snapshot for the whole
    read). A write in one fails instead of taking a lock."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(**{READ_ONLY: True}, postgresql_readonly=True,
                                        isolation_level="REPEATABLE READ")
    return engine.execution_options(**{READ_ONLY: True})


@asynccontextmanager
async def reading(db: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A read transaction beside `db` (on its engine), rolled back when done. A handler that
    reads at length commits its own transaction first, so it holds no lock meanwhile."""
    engine = db.bind
    assert isinstance(engine, AsyncEngine), "a session bound to one engine"
    async with AsyncSession(read_only(engine), expire_on_commit=False) as session:
        yield session


log = logging.getLogger(__name__)
# Alembic's INFO lines ("Context impl", "Will assume…") come on every start; the lines below
# say what changed, once.
logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# The revision that is the schema `create_all` made before there were migrations.
BASELINE = "0001"
# Key of the PostgreSQL advisory lock held while the schema is looked at or changed, so two
# workers starting on one new database do not both create it. Other locks use other keys.
SCHEMA_LOCK = 0x67726462_0001


async def hold_schema_lock(db: AsyncSession) -> None:
    """Wait for, then hold until `db`'s transaction ends, the lock migrations hold
    (SCHEMA_LOCK): what a registry load takes, so that two workers started together on one
    new database neither load it over a schema being made nor both insert the same places.
    On PostgreSQL an advisory lock; on SQLite nothing to add: a write transaction begins
    IMMEDIATE (the one writer), and the second load waits for the first to commit."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})


class SchemaError(Exception):
    """The database's schema is not the one this Gridbot runs on; the text says what to do."""


class SchemaBehind(SchemaError):
    def __init__(self, current: str, head: str) -> None:
        super().__init__(f"the database GRIDBOT_DATABASE_URL is at schema {current}, this "
                         f"Gridbot needs {head}: back it up, then run `gridbot db upgrade`")
        self.current, self.head = current, head


class SchemaAhead(SchemaError):
    def __init__(self, current: str) -> None:
        super().__init__(f"the database GRIDBOT_DATABASE_URL is at schema {current}, which this "
                         f"Gridbot does not know: it was upgraded by a newer Gridbot; run that")
        self.current = current


class SchemaOutdated(SchemaError):
    """Tables of a Gridbot from before migrations that lack columns of the first revision.

    Nothing records what those schemas were, so they cannot be upgraded; running on regardless
    would fail at the first query that names a missing column, in a loop that would take it
    for an outage.
    """

    def __init__(self, missing: list[str]) -> None:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        super().__init__(f"the database GRIDBOT_DATABASE_URL was made by an earlier Gridbot, "
                         f"from before schema migrations, and lacks {shown}; it cannot be "
                         f"upgraded: start with a new database (keep the old one)")
        self.missing = missing


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands. `current` is None for a database without Gridbot's tables
    (new) and for one made by `create_all` before migrations (`tables` true, not stamped)."""

    current: str | None
    head: str
    tables: bool

    def describe(self) -> str:
        if not self.tables:
            return (f"no Gridbot schema yet (a new database); `gridbot db upgrade` creates "
                    f"it at {self.head}")
        if self.current is None:
            return (f"made before schema migrations (not stamped); `gridbot db upgrade` "
                    f"adopts it and brings it to {self.head}")
        if self.current == self.head:
            return f"{self.current} (head)"
        return f"{self.current}; head is {self.head}: run `gridbot db upgrade`"


@dataclass(frozen=True)
class SchemaChange:
    """What preparing the schema did: `before` None is a new database."""

    before: str | None
    after: str
    adopted: bool = False

    def describe(self) -> str:
        if self.before is None:
            return f"created a new database at schema {self.after}"
        if self.before == self.after:
            adopted = " (adopted a database made before migrations)" if self.adopted else ""
            return f"the database is at schema {self.after}, the newest{adopted}"
        adopted = "adopted a database made before migrations and " if self.adopted else ""
        return f"{adopted}upgraded the database from schema {self.before} to {self.after}"


def _config(scripts: Path | None) -> Config:
    """`scripts` is where the revisions are (this package's, unless a test says otherwise)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts or MIGRATIONS))
    return config


def alembic_config(conn: Connection, scripts: Path | None = None) -> Config:
    """Alembic's configuration for migrations run on `conn` (see storage/migrations/env.py)."""
    config = _config(scripts)
    config.attributes["connection"] = conn
    return config


def _scripts(scripts: Path | None) -> ScriptDirectory:
    return _script_directory(scripts or MIGRATIONS)


@cache
def _script_directory(location: Path) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    # Read once per process: a start looks for the head and for the database's revision.
    return ScriptDirectory.from_config(_config(location))


def head_revision(scripts: Path | None = None) -> str:
    head = _scripts(scripts).get_current_head()
    if head is None:  # the package always ships at least the first revision
        raise RuntimeError(f"no migrations in {scripts}")
    return head


def _known(scripts: Path | None, revision: str) -> bool:
    return any(s.revision == revision for s in _scripts(scripts).walk_revisions())


# A top-level `name = value` or `name: type = value` line of a revision file.
_REVISION_LINE = re.compile(
    r"^(revision|down_revision|depends_on)[ \t]*(?::[^=\n]*)?=[ \t]*(.+?)[ \t]*$", re.M)


@cache
def _files_head(location: Path) -> str | None:
    """The head revision as read from the revision files' `revision = …` lines, without
    Alembic; None when that reading is not certain (a line it cannot parse, no single head,
    dependencies), and the start takes Alembic's word instead. Files as Alembic takes them:
    every `versions/*.py` but `__init__` and editors' `.#` locks."""
    revisions: set[str] = set()
    below: set[str] = set()
    try:
        files = sorted((location / "versions").glob("*.py"))
    except OSError:
        return None
    for path in files:
        if path.name.startswith(("__init__", ".#")):
            continue
        try:
            found = _REVISION_LINE.findall(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
        names = [name for name, _ in found]
        if sorted(names) != ["depends_on", "down_revision", "revision"]:
            return None  # missing, or written twice: leave it to Alembic
        try:
            values = {name: ast.literal_eval(value) for name, value in found}
        except (ValueError, SyntaxError):
            return None
        revision, down = values["revision"], values["down_revision"]
        if not isinstance(revision, str) or values["depends_on"] is not None:
            return None
        revisions.add(revision)
        if isinstance(down, str):
            below.add(down)
        elif isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
            below.update(down)
        elif down is not None:
            return None
    heads = revisions - below
    return heads.pop() if len(heads) == 1 else None


# A table of the first revision: while it is missing the tables are not Gridbot's (dropped
# by hand, say), and the start goes the long way, which makes them again.
_WITNESS = "cases"


def _at_head(conn: Connection, head: str) -> bool:
    """Whether the database is stamped at `head` and has Gridbot's tables: one statement,
    no Alembic, the start of nearly every run. A false answer costs only the long way
    (`_prepare`'s rest), which decides every other case: new, not stamped, behind, ahead.

    No advisory lock: nothing is changed, and on PostgreSQL a migration's uncommitted
    version row (or a new database's uncommitted tables) is not seen, so that case goes the
    long way and waits for the lock there."""
    try:
        with conn.begin():
            # The join matches no row of _WITNESS; it is there to fail if the table is not.
            rows = conn.execute(text(
                f"SELECT v.version_num FROM alembic_version v "
                f"LEFT JOIN {_WITNESS} w ON 1 = 0")).scalars().all()
    except DBAPIError:
        # No version table (a new database, one from before migrations) or no tables: the
        # failed transaction is rolled back, and the long way looks.
        return False
    return rows == [head]


def _state(conn: Connection, scripts: Path | None) -> SchemaState:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
    from alembic.runtime.migration import MigrationContext

    ours = set(inspect(conn).get_table_names()) & set(Base.metadata.tables)
    heads = MigrationContext.configure(conn).get_current_heads()
    current = heads[0] if heads and ours else None
    return SchemaState(current, head_revision(scripts), bool(ours))


@cache
def _baseline_columns() -> dict[str, tuple[str, ...]]:
    """Tables and columns of the first revision, as a migration to it makes them."""
    from alembic import command

    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), BASELINE)
        found = inspect(conn)
        columns = {t: tuple(c["name"] for c in found.get_columns(t))
                   for t in found.get_table_names() if t != "alembic_version"}
    engine.dispose()
    return columns


def _baseline_gaps(conn: Connection) -> list[str]:
    found = inspect(conn)
    have = set(found.get_table_names())
    columns, tables = [], []
    for table, wanted in sorted(_baseline_columns().items()):
        if table not in have:
            tables.append(f"table {table}")
            continue
        present = {c["name"] for c in found.get_columns(table)}
        columns += [f"{table}.{c}" for c in wanted if c not in present]
    # Missing columns first: they tell which tables are the old ones.
    return columns + tables


def _sqlite_pragma(conn: Connection, statement: str) -> list[Any]:
    # On the DB-API connection, outside any transaction: SQLite ignores a foreign_keys
    # pragma inside one, and SQLAlchemy would open one.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _prepare(conn: Connection, upgrade: bool, scripts: Path | None) -> SchemaChange:
    if (head := _files_head(scripts or MIGRATIONS)) is not None and _at_head(conn, head):
        return SchemaChange(head, head)
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # A migration that rebuilds a table (SQLite's only way to alter most of one) drops
        # the old copy; with foreign keys enforced that would delete, or cascade to, the
        # rows that point at it. They are checked once at the end instead.
        _sqlite_pragma(conn, "PRAGMA foreign_keys=OFF")
    try:
        with conn.begin():
            change = _prepare_in(conn, upgrade, scripts)
            # Only after a migration ran: the check reads every table, seconds on a large
            # database, and one found at its revision has had its references enforced.
            migrated = change.before != change.after
            if sqlite and migrated and (
                    broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                raise RuntimeError(f"the migration broke {len(broken)} references "
                                   f"(first in table {broken[0][0]}); nothing was changed")
    finally:
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys=ON")
    return change


def _prepare_in(conn: Connection, upgrade: bool, scripts: Path | None) -> SchemaChange:
    from alembic import command

    state = _state(conn, scripts)
    config = alembic_config(conn, scripts)
    if not state.tables:
        # Nothing to lose: a new database is made at once, on any backend. A version row
        # left behind by tables dropped by hand goes too.
        command.stamp(config, "base", purge=True)
        command.upgrade(config, "head")
        # Every first run of the SQLite default does this: not worth a line of its log.
        log.debug("created a new database at schema %s", state.head)
        return SchemaChange(None, state.head)
    adopted = False
    current = state.current
    if current is None:
        if missing := _baseline_gaps(conn):
            raise SchemaOutdated(missing)
        command.stamp(config, BASELINE)
        log.info("adopted a database made before migrations as schema %s", BASELINE)
        current, adopted = BASELINE, True
    if current == state.head:
        return SchemaChange(current, current, adopted)
    if not _known(scripts, current):
        raise SchemaAhead(current)
    if not upgrade:
        raise SchemaBehind(current, state.head)
    if conn.dialect.name == "sqlite" and (kept := _keep_copy(conn, current)):
        log.info("kept the database as it was before the upgrade in %s", kept)
    command.upgrade(config, "head")
    log.info("upgraded the database from schema %s to %s", current, state.head)
    return SchemaChange(current, state.head, adopted)


def _keep_copy(conn: Connection, revision: str) -> Path | None:
    """SQLite's online backup of the file about to be upgraded at start: the way back to the
    Gridbot before, since nobody was asked to make one."""
    name = conn.engine.url.database
    if not name or name == ":memory:":
        return None
    path = Path(name)
    kept = path.with_name(f"{path.name}.schema-{revision}.bak")
    # It holds what people wrote: readable by its owner only, like the database.
    os.close(os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    # A connection of its own reads the last committed state; in WAL mode it does not wait for
    # the write lock this upgrade holds.
    with closing(sqlite3.connect(path, timeout=30)) as source, \
            closing(sqlite3.connect(kept)) as target:
        source.backup(target)
    return kept


def auto_upgrades(url: str) -> bool:
    """Whether start-up upgrades a database that is behind: SQLite, the embedded default, has
    one process and its file is its owner's; a server database is upgraded by its operator
    (`gridbot db upgrade`, after a backup and with the old workers stopped)."""
    return url.startswith("sqlite")


async def create_schema(engine: AsyncEngine, *, upgrade: bool | None = None,
                        scripts: Path | None = None) -> SchemaChange:
    """Make the schema ready, or refuse: a new database is created at the newest revision, one
    made by `create_all` before migrations is adopted (stamped), and one that is behind is
    upgraded if `upgrade` (by default: on SQLite only), else SchemaBehind says what to run."""
    if upgrade is None:
        upgrade = auto_upgrades(engine.url.render_as_string())
    async with engine.connect() as conn:
        return await conn.run_sync(_prepare, upgrade, scripts)


async def schema_state(engine: AsyncEngine, scripts: Path | None = None) -> SchemaState:
    """Where the database stands, changing nothing."""
    async with engine.connect() as conn:
        state = await conn.run_sync(_state, scripts)
        await conn.rollback()
    return state
