"""Alembic migrations of the Gridbot schema, shipped inside the package (see storage/db.py)."""
