"""aiogram FSM storage in the database: a guided report survives a restart of the bot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import FsmRecord


def _key(key: StorageKey) -> str:
    return ":".join(str(part) for part in (
        key.bot_id, key.chat_id, key.user_id, key.thread_id or "",
        key.business_connection_id or "", key.destiny,
    ))


# The session of the update being handled. State changes then commit with what the handler
# did (and SQLite, with one writer at a time, is not asked for a second transaction).
current_session: ContextVar[AsyncSession | None] = ContextVar("current_session", default=None)


@asynccontextmanager
async def _session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    shared = current_session.get()
    if shared is not None:
        yield shared
        await shared.flush()
        return
    async with sessions() as db:
        yield db
        await db.commit()


async def _locked(db: AsyncSession, key: StorageKey) -> FsmRecord | None:
    """The conversation's row, locked until the update's transaction ends: two updates of one
    conversation (a button pressed twice at once) are then handled one after the other, and
    the second sees the state the first left."""
    return await db.get(FsmRecord, _key(key), with_for_update=True, populate_existing=True)


class SqlStorage(BaseStorage):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def _save(self, key: StorageKey, *, state: Any = ..., data: Any = ...) -> None:
        async with _session(self.sessions) as db:
            row = await _locked(db, key)
            new_state = state if state is not ... else (row.state if row else None)
            new_data = data if data is not ... else (row.data if row else {})
            if new_state is None and not new_data:
                if row is not None:
                    await db.delete(row)
            elif row is None:
                db.add(FsmRecord(key=_key(key), state=new_state, data=new_data))
            else:
                row.state, row.data = new_state, new_data

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        value = state.state if isinstance(state, State) else state
        await self._save(key, state=value)

    async def get_state(self, key: StorageKey) -> str | None:
        async with _session(self.sessions) as db:
            row = await _locked(db, key)
            return row.state if row else None

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._save(key, data=dict(data))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        async with _session(self.sessions) as db:
            row = await _locked(db, key)
            return dict(row.data) if row else {}

    async def close(self) -> None:
        return None
