"""Loops that must outlive a database or network outage: back off, and log once per outage.

A PostgreSQL restart or SQLite busy beyond its timeout fails every try of every loop until it
is over; a line per try would bury the log. `Outage` logs the first failure of an outage and
the recovery, and tells the loop how long to wait before the next try.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

MAX_DELAY = 30.0
_SCHEMA_ERROR = "no such "


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is the database (or the way to it) being away for a while.

    Such errors end the current try, never the process: a person must fix nothing.
    """
    if isinstance(exc, OperationalError) and _SCHEMA_ERROR in str(exc.orig):
        return False  # SQLite's "no such table / column": a person must fix it
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # asyncpg and the socket layer raise these before SQLAlchemy wraps anything.
    return isinstance(exc, OSError | ConnectionError)


class Outage:
    """One loop's view of an outage: first failure logged, retries quiet, recovery logged."""

    def __init__(self, log: logging.Logger, what: str, *, base: float = 0.5,
                 cap: float = MAX_DELAY, rnd: Callable[[], float] = random.random) -> None:
        self.log = log
        self.what = what
        self.base = base
        self.cap = cap
        self.rnd = rnd
        self.failures = 0

    @property
    def active(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; returns the seconds to wait before the next one."""
        self.failures += 1
        if self.failures == 1:
            # The type only: a driver's message may quote the statement's values.
            self.log.warning("%s failed (%s); retrying with backoff until it recovers",
                             self.what, type(exc).__name__)
        delay: float = min(self.base * 2.0 ** (self.failures - 1), self.cap)
        return delay * (0.5 + self.rnd() / 2)

    def ok(self) -> None:
        """Note a try that went through; logs the recovery once."""
        if self.failures:
            self.log.warning("%s recovered after %d failed tries", self.what, self.failures)
        self.failures = 0
