"""Persistence: SQLAlchemy models, the engine and session factory, and the FSM storage."""
