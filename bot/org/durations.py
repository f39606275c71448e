"""Durations as the registry writes them: `45s`, `30m`, `4h`, `3d`; an SLA may also be in
working time: `8wh` (working hours), `2wd` (working days)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in `text`; raises ValueError naming the accepted forms."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 45s, 30m, 4h or 3d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


_SLA = re.compile(r"^\s*(\d+)\s*(wh|wd)\s*$")


def parse_sla(text: str) -> tuple[int, str]:
    """(seconds, unit) of an SLA: clock time (unit ''), `8wh` (28800 working seconds, 'wh') or
    `2wd` (2 × 86400, 'wd': working days); raises ValueError naming the accepted forms."""
    match = _SLA.match(text)
    if match is None:
        try:
            return parse_duration(text), ""
        except ValueError:
            raise ValueError(f"{text!r} is not an SLA like 4h, 3d, 8wh (working hours) or "
                             "2wd (working days)") from None
    amount = int(match.group(1))
    if amount <= 0:
        raise ValueError(f"{text!r}: an SLA is more than nothing")
    unit = match.group(2)
    return amount * (3600 if unit == "wh" else 86400), unit


def format_duration(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_sla(seconds: int, unit: str = "") -> str:
    """An SLA as the registry writes it: `72h`/`3d` in clock time, `8wh`, `2wd`."""
    if unit == "wh" and seconds % 3600 == 0:
        return f"{seconds // 3600}wh"
    if unit == "wd" and seconds % 86400 == 0:
        return f"{seconds // 86400}wd"
    return format_duration(seconds)


_DISTANCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|km)?\s*$")


def parse_distance(value: object) -> float:
    """Metres in `50m`, `0.2km` or a bare number of metres; raises ValueError naming the
    accepted forms. (`50m` is fifty metres here, not the duration's fifty minutes.)"""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a distance like 50m or 0.2km")
    if isinstance(value, int | float):
        return float(value)
    match = _DISTANCE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a distance like 50m or 0.2km")
    amount = float(match.group(1))
    return amount * 1000 if match.group(2) == "km" else amount
