"""A building's door link (扫码报事): the payload of the QR code on its poster.

`/start d<key>` opens a private report already placed in the building whose `nodes.door_key`
is `<key>`. The key is random (`secrets.token_urlsafe`), made when the building's first
poster is printed, so nobody can reach another building's link from one they have seen (the
older `/start b<building id>` of the group help can be counted through). A new key
(`gridbot poster --renew`) makes the printed posters of the old one stale: such a payload,
or one altered, finds no building and the ordinary report flow starts instead.

Telegram's start parameter: at most 64 characters of A-Z, a-z, 0-9, _ and -.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.org.directory import NodeKind
from storage.models import Node

PREFIX = "d"
KEY_BYTES = 16  # 128 random bits: 22 characters of the URL-safe alphabet
_KEY = re.compile(r"[A-Za-z0-9_-]{16,32}")  # what nodes.door_key (String(32)) can hold


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def payload(key: str) -> str:
    """The /start payload of a door key."""
    return PREFIX + key


def is_door_payload(text: str) -> bool:
    """Whether a /start payload is meant as a door link (well formed or not)."""
    return text.startswith(PREFIX)


def key_of(text: str) -> str | None:
    """The key of a door link's payload, or None when it cannot be one."""
    key = text.removeprefix(PREFIX) if is_door_payload(text) else ""
    return key if _KEY.fullmatch(key) else None


async def building_of(db: AsyncSession, text: str) -> int | None:
    """The active building whose door link `text` is (a /start payload), or None: not a door
    link, altered, or stale (the key was renewed, the building left the registry)."""
    key = key_of(text)
    if key is None:
        return None
    return await db.scalar(select(Node.id).where(
        Node.door_key == key, Node.kind == NodeKind.BUILDING, Node.active.is_(True)))


async def door_keys(db: AsyncSession, building_ids: Iterable[int], *,
                    renew: bool = False) -> dict[int, str]:
    """Each building's door key, made for those that have none (every one with `renew`);
    flushed, not committed: the caller commits once the posters are written."""
    ids = list(dict.fromkeys(building_ids))
    rows = (await db.scalars(select(Node).where(Node.id.in_(ids)))).all() if ids else []
    keys: dict[int, str] = {}
    for node in rows:
        if node.kind != NodeKind.BUILDING:
            raise ValueError(f"{node.code} is a {node.kind}, not a building")
        if renew or not node.door_key:
            node.door_key = new_key()
        keys[node.id] = node.door_key
    await db.flush()
    return {i: keys[i] for i in ids if i in keys}
