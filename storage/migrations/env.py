"""Alembic's environment: migrations run on the connection storage/db.py hands over.

Gridbot has no alembic.ini: `gridbot db upgrade` and start-up open the database themselves
(with the SQLite pragmas of storage/db.py) and pass the connection, already inside the
transaction every migration of one upgrade shares, in `config.attributes["connection"]`.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from storage.models import Base, UTCDateTime


def _render_item(kind: str, item: Any, autogen: AutogenContext) -> str | Literal[False]:
    # A revision must not import the models it freezes: the column type it stores is the
    # plain timezone-aware DATETIME that UTCDateTime wraps.
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Gridbot migrations run through storage.db (`gridbot db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot alter most of a table in place; batch mode copies it instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
