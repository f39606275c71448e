"""Work that one worker process does alone: polling, one chat's outbox, one chat's updates.

Several `gridbot` processes may share one PostgreSQL. What they must not do side by side is
claimed with a session-level advisory lock (`pg_try_advisory_lock`) taken on one connection
the process keeps for its claims. No transaction stays open while a claim is held (a chat's
worker calls Telegram between its short transactions), and a process that dies loses its
claims with its connection, so nothing waits for a lease to run out.

One connection per process, not one per claim: a worker serving 32 chats would otherwise
take 32 connections from the pool its handlers need. A connection holds a session lock it
took twice, so claims within the process are kept apart here, by key.

On SQLite there is one process and nothing to claim: every claim is granted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

POLLING = "polling"
OUTBOX_CHAT = "outbox-chat"
INBOX_CHAT = "inbox-chat"


def lock_key(kind: str, value: int = 0) -> int:
    """A signed 64-bit advisory lock key for (kind, value); chat ids use all 64 bits already,
    so kinds are told apart by hashing rather than by the two-int form."""
    digest = hashlib.blake2b(f"gridbot:{kind}:{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(eq=False)
class Claim:
    """One held claim. `valid` turns false when its connection was lost: the lock went with
    it, and another worker may take the work over."""

    claims: Claims
    key: int
    generation: int

    @property
    def valid(self) -> bool:
        return self.claims.holds(self)


class Claims:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.shared = engine.dialect.name == "postgresql"
        self._conn: AsyncConnection | None = None
        self._held: set[int] = set()
        self._io = asyncio.Lock()
        self._generation = 0

    @classmethod
    def of(cls, sessions: async_sessionmaker[AsyncSession]) -> Claims:
        """The claims of the process on the database `sessions` use (one per engine)."""
        engine = sessions.kw["bind"]
        assert isinstance(engine, AsyncEngine)
        found = _BY_ENGINE.get(engine)
        if found is None:
            found = _BY_ENGINE[engine] = cls(engine)
        return found

    def holds(self, claim: Claim) -> bool:
        if not self.shared:
            return True
        return claim.generation == self._generation and claim.key in self._held

    async def take(self, kind: str, value: int = 0) -> Claim | None:
        """Claim (kind, value) without waiting: None while this or another process has it.

        Raises the database error that prevented asking (an outage, for the caller's loop).
        """
        key = lock_key(kind, value)
        if not self.shared:
            return Claim(self, key, self._generation)
        async with self._io:
            if key in self._held:
                return None
            conn = await self._connection()
            try:
                got = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"),
                                             {"k": key}))
            except Exception:
                await self._lost()
                raise
            if not got:
                await self._close_if_idle()
                return None
            self._held.add(key)
            return Claim(self, key, self._generation)

    async def release(self, claim: Claim) -> None:
        """Let the claim go; a claim lost with its connection is gone already."""
        if not self.shared:
            return
        async with self._io:
            if not self.holds(claim):
                return
            self._held.discard(claim.key)
            assert self._conn is not None
            try:
                await self._conn.scalar(text("SELECT pg_advisory_unlock(:k)"),
                                        {"k": claim.key})
            except Exception as exc:
                # The connection is gone, and its locks with it: nothing is left held.
                log.warning("claims connection lost while releasing (%s)", type(exc).__name__)
                await self._lost()
                return
            await self._close_if_idle()

    async def check(self) -> bool:
        """Whether the claims connection still answers; when not, every claim is lost."""
        if not self.shared:
            return True
        async with self._io:
            if self._conn is None:
                return not self._held
            try:
                await self._conn.scalar(text("SELECT 1"))
            except Exception as exc:
                log.warning("claims connection lost (%s): its claims are let go",
                            type(exc).__name__)
                await self._lost()
                return False
            return True

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self.engine.connect()
            # Autocommit: a claim held for hours must not be an idle open transaction.
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    async def _close_if_idle(self) -> None:
        """Nothing held: the connection goes back to the pool (its session holds no lock)."""
        if self._held or self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            await conn.close()
        except Exception:
            log.debug("closing the claims connection failed", exc_info=True)

    async def _lost(self) -> None:
        self._generation += 1
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
            except Exception:
                log.debug("invalidating the claims connection failed", exc_info=True)


_BY_ENGINE: weakref.WeakKeyDictionary[AsyncEngine, Claims] = weakref.WeakKeyDictionary()
