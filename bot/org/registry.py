"""The organisation registry: parse and check a YAML file, then apply it in one transaction.

A file with any error is rejected whole; every error names the line and the path of the value
at fault. Applying is idempotent: nodes, people and categories are matched by their codes and
ids, roles are replaced by what the file says, and nothing that cases refer to is deleted.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import delete, inspect, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import Clock
from bot.org import geo
from bot.org.directory import NodeKind
from bot.org.durations import parse_distance, parse_duration, parse_sla
from bot.org.roles import RoleName
from storage.db import hold_schema_lock
from storage.models import (
    Base,
    Category,
    Department,
    DepartmentMember,
    Node,
    OrgSettings,
    Person,
    Role,
)

Path_ = tuple[str | int, ...]
_QUIET = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
KEYWORD_MAX_LEN = 20  # a category's keyword: a word or a short phrase
KEYWORDS_MAX = 50
HOTLINE_MAX_LEN = 64  # nodes.hotline
_WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}


class RegistryError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _duration(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a duration string like 45s, 30m, 4h or 3d, or null")
    return parse_duration(value)


class PersonRef(_Model):
    id: int = Field(gt=0)
    name: str = Field(min_length=1, max_length=200)


class PolicyModel(_Model):
    verify_within: int | None
    remind_at: float | None = Field(gt=0, lt=1)
    overdue_repeat: int | None
    escalate_after: int | None
    rating_within: int | None
    quiet_hours: str | None
    # The workflow of the standard; every key optional, so older registries load unchanged.
    # The defaults are seconds: a validator in "before" mode does not run on a default.
    max_extensions: int = Field(default=1, ge=0, le=10)  # per case; 0 turns 延期 off
    extension_answer_within: int | None = 86400  # a request unanswered is declined
    check: bool = False  # 核查 before rating, for every category
    check_within: int | None = 86400
    whistle_ack_within: int | None = 1800
    digest_at: str | None = "08:30"  # the daily digest's local time; null turns it off
    # Duplicates (issue 11): an open case of the same category reported within the window,
    # in the building or within the radius of a shared location; a null window: no offer.
    duplicate_window: int | None = 259200
    duplicate_radius: float = 50.0  # metres
    # 巡查 (issue 22): a patrol covers a building of its grid it came within this distance of.
    patrol_radius: float = 50.0  # metres

    _durations = field_validator(
        "verify_within", "overdue_repeat", "escalate_after", "rating_within",
        "extension_answer_within", "check_within", "whistle_ack_within", "duplicate_window",
        mode="before"
    )(_duration)

    @field_validator("duplicate_radius", "patrol_radius", mode="before")
    @classmethod
    def _radius(cls, value: Any) -> float:
        metres = parse_distance(value)
        if not 0 < metres <= 5000:
            raise ValueError("must be a distance up to 5km, like 50m")
        return metres

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None and not _QUIET.match(value):
            raise ValueError("must look like 22:00-07:00, or be null")
        return value

    @field_validator("digest_at", mode="before")
    @classmethod
    def _digest_at(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int) and 0 <= value < 24 * 60:
            # YAML 1.1 reads an unquoted 08:30 as a sexagesimal number: 510.
            value = f"{value // 60:02d}:{value % 60:02d}"
        if not isinstance(value, str) or not _HHMM.match(value.strip()):
            raise ValueError("must be a local time like 08:30, or null")
        return value.strip()


class CategoryModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: dict[str, str]
    sla: int
    # '' clock time; 'wh' / 'wd' working hours / days of the working calendar.
    sla_unit: str = ""
    urgent: bool = False
    check: bool = False  # 核查: a building head checks the result before the rating
    # Words that suggest this category for a report's text (bot/org/hints.py); optional.
    keywords: list[str] = Field(default_factory=list)

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of words like [垃圾, 清运]")
        words: list[str] = []
        for item in value:
            # YAML reads an unquoted 110 or true as a number or a bool: refused, not guessed.
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"{item!r}: each keyword is a non-empty word")
            word = item.strip()
            if len(word) > KEYWORD_MAX_LEN:
                raise ValueError(f"{word!r}: a keyword has at most {KEYWORD_MAX_LEN} characters")
            if word not in words:
                words.append(word)
        if len(words) > KEYWORDS_MAX:
            raise ValueError(f"at most {KEYWORDS_MAX} keywords per category")
        return words

    @field_validator("sla", mode="before")
    @classmethod
    def _sla(cls, value: Any) -> int:
        if not isinstance(value, str):
            raise ValueError("must be a duration string like 4h or 3d, or 8wh / 2wd in "
                             "working time")
        return parse_sla(value)[0]

    @model_validator(mode="before")
    @classmethod
    def _sla_unit(cls, data: Any) -> Any:
        """The unit goes with the seconds (the `sla` check above reports a bad value)."""
        if isinstance(data, dict) and isinstance(data.get("sla"), str):
            try:
                return {**data, "sla_unit": parse_sla(data["sla"])[1]}
            except ValueError:
                pass
        return data

    @field_validator("name")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("zh_CN"):
            raise ValueError("needs a zh_CN name")
        return value


class UnitModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: str | None = None
    head: PersonRef | None = None
    chat: int | None = Field(default=None, lt=0)


def _lon_lat(value: Any) -> list[float]:
    """[lon, lat] in degrees; YAML's true/false are not numbers here."""
    if (not isinstance(value, list) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)):
        raise ValueError(f"{value!r}: a point is [lon, lat], two numbers")
    lon, lat = float(value[0]), float(value[1])
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"{value!r}: a point is [lon, lat] with -180 ≤ lon ≤ 180, "
                         "-90 ≤ lat ≤ 90")
    return [lon, lat]


def _position(value: Any) -> list[float]:
    """A GeoJSON position: [lon, lat], or [lon, lat, altitude] as RFC 7946 allows (and
    exports from GIS tools write); the altitude is dropped, a grid is flat."""
    if (not isinstance(value, list) or len(value) not in (2, 3)
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)):
        raise ValueError(f"{value!r}: a position is [lon, lat] or [lon, lat, altitude], "
                         "numbers")
    return _lon_lat(value[:2])


class BuildingModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: str = Field(min_length=1)
    chat: int | None = Field(default=None, lt=0)
    head: PersonRef | None = None
    units: list[UnitModel] = []
    # Where it stands, [lon, lat] in the registry's `crs` (bot/org/geo.py); optional.
    point: list[float] | None = None
    _wgs: list[float] | None = PrivateAttr(default=None)  # the point in WGS-84

    @field_validator("point", mode="before")
    @classmethod
    def _point(cls, value: Any) -> list[float] | None:
        return None if value is None else _lon_lat(value)


class GridModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: str = Field(min_length=1)
    leader: PersonRef | None = None
    members: list[PersonRef] = []
    chat: int | None = Field(default=None, lt=0)
    buildings: list[BuildingModel] = []
    # Its boundary, inline [[lon, lat], …] or a GeoJSON file relative to the registry's;
    # optional, in the registry's `crs`. Checked and converted by `_geography`.
    boundary: list[list[float]] | None = None
    boundary_file: str | None = None
    _wgs: Any = PrivateAttr(default=None)  # the boundary in WGS-84, as nodes.boundary holds it

    @field_validator("boundary", mode="before")
    @classmethod
    def _boundary(cls, value: Any) -> list[list[float]] | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) < 3:
            raise ValueError("a boundary is a list of at least 3 points [lon, lat]")
        return [_lon_lat(p) for p in value]

    @model_validator(mode="after")
    def _one_boundary(self) -> GridModel:
        if self.boundary is not None and self.boundary_file is not None:
            raise ValueError("give boundary or boundary_file, not both")
        return self


class CommunityModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: str = Field(min_length=1)
    supervisors: list[PersonRef] = []
    grids: list[GridModel] = []
    # Its service hotline, printed on its buildings' posters (扫码报事); optional.
    hotline: str | None = None

    @field_validator("hotline", mode="before")
    @classmethod
    def _hotline(cls, value: Any) -> str | None:
        if value is None:
            return None
        # YAML reads an unquoted 12345 as a number: a hotline all of digits is still one.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a phone number like 0551-62881234 or 12345, or null")
        text = value.strip()
        if len(text) > HOTLINE_MAX_LEN or sum(c.isdigit() for c in text) < 3:
            raise ValueError(f"{text!r}: a phone number with at least 3 digits, at most "
                             f"{HOTLINE_MAX_LEN} characters")
        return text


class StreetModel(_Model):
    code: str = Field(pattern=_CODE.pattern)
    name: str = Field(min_length=1)
    supervisors: list[PersonRef] = []
    communities: list[CommunityModel] = []


class DepartmentModel(_Model):
    """A department a case can be whistled to (吹哨报到): its contact people get the card."""

    code: str = Field(pattern=_CODE.pattern)
    name: str = Field(min_length=1, max_length=200)
    people: list[PersonRef] = Field(min_length=1)
    chat: int | None = Field(default=None, lt=0)  # its work chat, optional


def _day(value: Any) -> list[str]:
    """One day or an inclusive range `2027-01-01..2027-01-03`, as ISO dates."""
    if isinstance(value, date):
        return [value.isoformat()]
    if not isinstance(value, str):
        raise ValueError("days are dates like 2026-12-25 or ranges like 2027-01-01..2027-01-03")
    first, _, last = value.strip().partition("..")
    try:
        start = date.fromisoformat(first.strip())
        end = date.fromisoformat(last.strip()) if last else start
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a date like 2026-12-25 or a range like "
                         "2027-01-01..2027-01-03") from exc
    if end < start or (end - start).days > 366:
        raise ValueError(f"{value!r}: a range runs forwards, within a year")
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


class CalendarModel(_Model):
    """The working calendar: working hours, the weekend, the official schedule of public
    holidays and 调休 (chinese-calendar), and the district's own days on top of it."""

    working_hours: list[str] = ["08:30-12:00", "14:00-17:30"]
    weekend: list[int] = [6, 7]  # ISO weekdays; `sat`, `sun` in the file
    official: bool = True  # the State Council's schedule, for the years the package has
    holidays: list[str] = []  # days off: a local holiday, next year's schedule
    workdays: list[str] = []  # working days: a 调休 weekend day the package does not know yet
    years: list[int] = []  # years whose official schedule `holidays`/`workdays` complete

    @field_validator("working_hours")
    @classmethod
    def _hours(cls, value: list[str]) -> list[str]:
        spans = []
        for item in value:
            match = _QUIET.match(str(item).strip())
            if not match:
                raise ValueError(f"{item!r}: working hours look like 08:30-12:00")
            start, end = str(item).strip().split("-")
            if end <= start:
                raise ValueError(f"{item!r}: a working period ends after it starts, same day")
            spans.append((start, end))
        if not spans:
            raise ValueError("at least one working period, like 08:30-12:00")
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise ValueError("working periods must not overlap")
        return [f"{a}-{b}" for a, b in spans]

    @field_validator("weekend", mode="before")
    @classmethod
    def _weekend(cls, value: Any) -> list[int]:
        if not isinstance(value, list):
            raise ValueError("a list of days like [sat, sun]")
        days = []
        for item in value:
            day = _WEEKDAYS.get(str(item).strip().lower()[:3]) if isinstance(item, str) else item
            if not isinstance(day, int) or not 1 <= day <= 7:
                raise ValueError(f"{item!r} is not a weekday (mon … sun)")
            days.append(day)
        if len(set(days)) == 7:
            raise ValueError("a week needs a working day")
        return sorted(set(days))

    @field_validator("holidays", "workdays", mode="before")
    @classmethod
    def _days(cls, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise ValueError("a list of dates like 2026-12-25 or ranges like "
                             "2027-01-01..2027-01-03")
        return sorted({d for item in value for d in _day(item)})

    @field_validator("years")
    @classmethod
    def _years(cls, value: list[int]) -> list[int]:
        if any(not 2000 <= y <= 2100 for y in value):
            raise ValueError("years like 2027")
        return sorted(set(value))

    @model_validator(mode="after")
    def _holidays_not_workdays(self) -> CalendarModel:
        both = set(self.holidays) & set(self.workdays)
        if both:
            raise ValueError(f"{min(both)} is both a holiday and a workday")
        return self

    def stored(self) -> dict[str, Any]:
        """What org_settings.calendar holds."""
        return {"hours": [h.split("-") for h in self.working_hours], "weekend": self.weekend,
                "official": self.official, "holidays": self.holidays,
                "workdays": self.workdays, "years": self.years}


class WeightsModel(_Model):
    """The monthly score: points for 按期结案率, 结案率 and 满意率, and 返工率's penalty; and
    for the grid's rounds (issue 22): 巡查覆盖率 (coverage), 走访率 (visits) and 专项任务完成率
    (campaigns), 0 unless a district sets them (bot/ledger/rounds.py)."""

    on_time: float = Field(default=50, ge=0, le=100)
    closed: float = Field(default=20, ge=0, le=100)
    satisfied: float = Field(default=20, ge=0, le=100)
    rework: float = Field(default=10, ge=0, le=100)
    coverage: float = Field(default=0, ge=0, le=100)
    visits: float = Field(default=0, ge=0, le=100)
    campaigns: float = Field(default=0, ge=0, le=100)

    def stored(self) -> dict[str, float]:
        """What org_settings.score_weights holds: the four case weights, and the rounds'
        weights a district set (0 is the same as not set)."""
        rounds = ("coverage", "visits", "campaigns")
        return {k: v for k, v in self.model_dump().items() if k not in rounds or v}


class AssessmentModel(_Model):
    weights: WeightsModel = WeightsModel()


class CareKindModel(_Model):
    """A district's own kind of household on the care roster (走访), beside the four
    standard ones (elderly_alone 独居老人, disabled 残疾人, hardship 困难家庭, left_behind
    留守儿童), with its default visit interval (7d, 2w, 1m, 3m)."""

    code: str = Field(pattern=_CODE.pattern)
    name: dict[str, str]
    interval: str = "1m"

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]{0,2}[dwm]",
                                                          value.strip()):
            raise ValueError("must be an interval like 7d, 2w, 1m or 3m")
        return value.strip()

    @field_validator("name")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("zh_CN"):
            raise ValueError("needs a zh_CN name")
        return value


class RegistryModel(_Model):
    timezone: str = "Asia/Shanghai"
    locale: str = "zh_CN"
    # The coordinates' system: wgs84 (GPS, Telegram; the default, taken as they are) or
    # gcj02 (drawn on 高德/腾讯 maps), converted to WGS-84 at load.
    crs: Literal["wgs84", "gcj02"] = "wgs84"
    policy: PolicyModel
    categories: list[CategoryModel] = Field(min_length=1)
    streets: list[StreetModel] = Field(min_length=1)
    departments: list[DepartmentModel] = []
    calendar: CalendarModel | None = None
    assessment: AssessmentModel | None = None
    # 走访: the district's own kinds of household (bot/rounds/care.py has the standard ones).
    care_kinds: list[CareKindModel] = []

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        if value not in ("zh_CN", "en"):
            raise ValueError("must be zh_CN or en")
        return value


# --- reading YAML with line numbers -------------------------------------------------------


def _to_python(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            result[key] = _to_python(value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines) for i, item in enumerate(node.value)]
    try:
        return yaml.safe_load(yaml.serialize(node))
    except ValueError:
        # A scalar YAML takes for a date but is none (2027-13-01): the text, which the
        # checks then reject with its line.
        return node.value


def _where(path: Path_, lines: dict[Path_, int]) -> str:
    probe = path
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe, 1)
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    return f"line {line}: {dotted or '(top)'}"


def parse_registry(text: str, base: Path | None = None) -> RegistryModel:
    """Parse and check a registry; raise RegistryError listing every problem found.

    `base` is the registry file's folder, which a grid's `boundary_file` is relative to
    (the current folder when None)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RegistryError([f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from exc
    if root is None:
        raise RegistryError(["line 1: the file is empty"])
    lines: dict[Path_, int] = {}
    data = _to_python(root, (), lines)
    if not isinstance(data, dict):
        raise RegistryError(["line 1: the registry must be a mapping (timezone, policy, ...)"])
    try:
        model = RegistryModel.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_where(loc, lines)}: {message}")
        # The cross-checks read what they can of the raw data, so one run reports everything.
        problems += _cross_check(data, lines)
        raise RegistryError(problems) from exc
    problems = _cross_check(model, lines) + _geography(model, lines, base or Path("."))
    if problems:
        raise RegistryError(problems)
    return model


def _geojson(path: Path) -> Any:
    """A boundary's coordinates from a GeoJSON Polygon or MultiPolygon (a Feature or a bare
    geometry): a ring for a polygon without holes, else MultiPolygon coordinates."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not GeoJSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "Feature":
        data = data.get("geometry")
    kind = data.get("type") if isinstance(data, dict) else None
    coords = data.get("coordinates") if isinstance(data, dict) else None
    if kind not in ("Polygon", "MultiPolygon") or not isinstance(coords, list) or not coords:
        raise ValueError(f"{path}: needs a GeoJSON Polygon or MultiPolygon (or a Feature "
                         "holding one)")
    try:
        if kind == "Polygon":
            rings = [[_position(p) for p in ring] for ring in coords]
            return rings[0] if len(rings) == 1 else [rings]
        return [[[_position(p) for p in ring] for ring in poly] for poly in coords]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _geography(model: RegistryModel, lines: dict[Path_, int], base: Path) -> list[str]:
    """Read boundary files, check every boundary is a valid polygon, and convert boundaries
    and points to WGS-84 (kept on the models for `apply_registry`)."""
    problems: list[str] = []

    def wgs(lon: float, lat: float) -> tuple[float, float]:
        return geo.gcj02_to_wgs84(lon, lat) if model.crs == "gcj02" else (lon, lat)

    for si, street in enumerate(model.streets):
        for ci, community in enumerate(street.communities):
            for gi, grid in enumerate(community.grids):
                gp: Path_ = ("streets", si, "communities", ci, "grids", gi)
                raw: Any = grid.boundary
                if grid.boundary_file is not None:
                    try:
                        raw = _geojson(base / grid.boundary_file)
                    except ValueError as exc:
                        problems.append(f"{_where((*gp, 'boundary_file'), lines)}: {exc}")
                        raw = None
                if raw is not None:
                    key = "boundary_file" if grid.boundary_file is not None else "boundary"
                    problem = geo.polygon_problem(raw)
                    if problem:
                        problems.append(f"{_where((*gp, key), lines)}: not a valid polygon "
                                        f"({problem})")
                    else:
                        grid._wgs = geo.map_coords(raw, wgs)
                for bi, building in enumerate(grid.buildings):
                    if building.point is None:
                        continue
                    building._wgs = list(wgs(*building.point))
                    # A point outside its own grid is a typo (or the wrong crs): a location
                    # shared there would be routed to another grid, or to none. Checked in
                    # the registry's own coordinates, where its edges are straight.
                    if grid._wgs is not None and not geo.covers(raw, *building.point):
                        problems.append(f"{_where((*gp, 'buildings', bi, 'point'), lines)}: "
                                        f"{building.code} lies outside its grid's boundary")
    if not problems:
        problems += _overlaps(model, lines)
    return problems


def _overlaps(model: RegistryModel, lines: dict[Path_, int]) -> list[str]:
    """Grids whose boundaries overlap by more than geo.OVERLAP_TOLERANCE square metres (a
    location shared in the overlap would go to whichever grid comes first): each pair named
    once, at the later grid's boundary, with the overlap's area. A shared edge or corner has
    no area; a sliver where two drawings of one edge disagree by centimetres is let be."""
    grids: list[tuple[GridModel, Path_]] = []
    for si, street in enumerate(model.streets):
        for ci, community in enumerate(street.communities):
            for gi, grid in enumerate(community.grids):
                if grid._wgs is not None:
                    key = "boundary_file" if grid.boundary_file is not None else "boundary"
                    grids.append((grid, ("streets", si, "communities", ci, "grids", gi, key)))
    problems = []
    for i, j, area in geo.overlaps([grid._wgs for grid, _ in grids]):
        (first, _), (second, path) = grids[i], grids[j]
        problems.append(f"{_where(path, lines)}: grid {second.code}'s boundary overlaps grid "
                        f"{first.code}'s by about {area:,.0f} m² (more than "
                        f"{geo.OVERLAP_TOLERANCE:g} m²): a location there would belong to both")
    return problems


def _get(obj: Any, name: str) -> Any:
    """A field of a checked model, or of the raw mapping when the schema check failed."""
    if isinstance(obj, BaseModel):
        return getattr(obj, name)
    return obj.get(name) if isinstance(obj, dict) else None


def _each(obj: Any, name: str) -> list[tuple[int, Any]]:
    items = _get(obj, name)
    if not isinstance(items, list):
        return []
    return [(i, x) for i, x in enumerate(items) if isinstance(x, BaseModel | dict)]


def _cross_check(model: RegistryModel | dict[str, Any], lines: dict[Path_, int]) -> list[str]:
    problems: list[str] = []
    seen_codes: dict[str, Path_] = {}
    seen_chats: dict[int, Path_] = {}
    names: dict[int, str] = {}

    def code(value: Any, path: Path_) -> None:
        if not isinstance(value, str):
            return
        if value in seen_codes:
            problems.append(f"{_where(path, lines)}: code {value!r} is used twice")
        seen_codes[value] = path

    def chat(value: Any, path: Path_) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            return
        if value in seen_chats:
            problems.append(f"{_where(path, lines)}: chat {value} is bound to two places")
        seen_chats[value] = path

    def person(ref: Any, path: Path_) -> None:
        pid, name = _get(ref, "id"), _get(ref, "name")
        if not isinstance(pid, int) or not isinstance(name, str):
            return
        if pid in names and names[pid] != name:
            problems.append(
                f"{_where(path, lines)}: person {pid} is named both "
                f"{names[pid]!r} and {name!r}"
            )
        names.setdefault(pid, name)

    cat_codes: set[str] = set()
    for i, cat in _each(model, "categories"):
        cat_code = _get(cat, "code")
        if not isinstance(cat_code, str):
            continue
        if cat_code in cat_codes:
            problems.append(f"{_where(('categories', i, 'code'), lines)}: category "
                            f"{cat_code!r} is listed twice")
        cat_codes.add(cat_code)
    if isinstance(_get(model, "categories"), list) and "other" not in cat_codes:
        problems.append(f"{_where(('categories',), lines)}: a category with code 'other' is "
                        "needed for reports that name none")

    for si, street in _each(model, "streets"):
        sp: Path_ = ("streets", si)
        code(_get(street, "code"), (*sp, "code"))
        for pi, sup in _each(street, "supervisors"):
            person(sup, (*sp, "supervisors", pi))
        for ci, community in _each(street, "communities"):
            cp: Path_ = (*sp, "communities", ci)
            code(_get(community, "code"), (*cp, "code"))
            for pi, sup in _each(community, "supervisors"):
                person(sup, (*cp, "supervisors", pi))
            for gi, grid in _each(community, "grids"):
                gp: Path_ = (*cp, "grids", gi)
                code(_get(grid, "code"), (*gp, "code"))
                chat(_get(grid, "chat"), (*gp, "chat"))
                person(_get(grid, "leader"), (*gp, "leader"))
                for mi, member in _each(grid, "members"):
                    person(member, (*gp, "members", mi))
                for bi, building in _each(grid, "buildings"):
                    bp: Path_ = (*gp, "buildings", bi)
                    b_code = _get(building, "code")
                    code(b_code, (*bp, "code"))
                    chat(_get(building, "chat"), (*bp, "chat"))
                    person(_get(building, "head"), (*bp, "head"))
                    for ui, unit in _each(building, "units"):
                        up: Path_ = (*bp, "units", ui)
                        u_code = _get(unit, "code")
                        if isinstance(b_code, str) and isinstance(u_code, str):
                            code(f"{b_code}/{u_code}", (*up, "code"))
                        chat(_get(unit, "chat"), (*up, "chat"))
                        person(_get(unit, "head"), (*up, "head"))

    # Departments have codes of their own (not places'); a chat is one place's or one
    # department's, and a person has one name wherever they appear.
    dept_codes: set[str] = set()
    for di, dept in _each(model, "departments"):
        dp: Path_ = ("departments", di)
        d_code = _get(dept, "code")
        if isinstance(d_code, str):
            if d_code in dept_codes:
                problems.append(f"{_where((*dp, 'code'), lines)}: department {d_code!r} is "
                                "listed twice")
            dept_codes.add(d_code)
        chat(_get(dept, "chat"), (*dp, "chat"))
        for pi, ref in _each(dept, "people"):
            person(ref, (*dp, "people", pi))
    return problems


# --- applying ------------------------------------------------------------------------------


@dataclass
class ApplyReport:
    nodes: int = 0
    people: int = 0
    roles: int = 0
    categories: int = 0
    departments: int = 0
    deactivated: list[str] = field(default_factory=list)
    # What open cases must follow (bot/cases/registry_edit.py): categories whose SLA
    # changed, and whether the policy's timing did.
    changed_categories: set[str] = field(default_factory=set)
    policy_changed: bool = False


async def write_registry(db: AsyncSession, model: RegistryModel, clock: Clock) -> ApplyReport:
    """Make the organisation's tables say what the registry says, flushed, not committed:
    `bot.cases.registry_edit.apply_registry` retimes the open cases and commits.

    The whole load holds the schema lock (issue 20, defect 12): a second worker loading the
    same registry at the same time waits for this one's commit, then finds its rows."""
    await hold_schema_lock(db)
    report = ApplyReport()
    existing = {n.code: n for n in (await db.scalars(select(Node))).all()}
    seen: set[str] = set()
    roles: set[tuple[int, str, str]] = set()
    people: dict[int, str] = {}
    position = 0

    async def upsert(kind: NodeKind, code: str, name: str, parent: Node | None,
                     chat: int | None) -> Node:
        nonlocal position
        position += 1
        node = existing.get(code)
        if node is None:
            node = Node(kind=kind, code=code)
            db.add(node)
            existing[code] = node
        node.kind = kind
        node.name = name
        node.parent_id = parent.id if parent else None
        node.active = True
        node.position = position
        if chat is not None:
            # A chat named here takes the chat away from wherever /bind had put it.
            for other in existing.values():
                if other is not node and other.chat_id == chat:
                    other.chat_id = None
            node.chat_id = chat
        await db.flush()
        seen.add(code)
        report.nodes += 1
        return node

    def role(ref: PersonRef | None, name: str, code: str) -> None:
        if ref is None:
            return
        people[ref.id] = ref.name
        roles.add((ref.id, name, code))

    for street in model.streets:
        s_node = await upsert(NodeKind.STREET, street.code, street.name, None, None)
        for sup in street.supervisors:
            role(sup, RoleName.STREET_SUPERVISOR, s_node.code)
        for community in street.communities:
            c_node = await upsert(NodeKind.COMMUNITY, community.code, community.name, s_node,
                                  None)
            if c_node.hotline != community.hotline:
                c_node.hotline = community.hotline
            for sup in community.supervisors:
                role(sup, RoleName.COMMUNITY_SUPERVISOR, c_node.code)
            for grid in community.grids:
                g_node = await upsert(NodeKind.GRID, grid.code, grid.name, c_node, grid.chat)
                _place_geo(g_node, grid._wgs, None)
                role(grid.leader, RoleName.GRID_LEADER, g_node.code)
                for member in grid.members:
                    role(member, RoleName.GRID_MEMBER, g_node.code)
                for building in grid.buildings:
                    b_node = await upsert(NodeKind.BUILDING, building.code, building.name, g_node,
                                          building.chat)
                    _place_geo(b_node, None, building._wgs)
                    role(building.head, RoleName.BUILDING_HEAD, b_node.code)
                    for unit in building.units:
                        u_code = f"{building.code}/{unit.code}"
                        u_name = unit.name or unit.code
                        u_node = await upsert(NodeKind.UNIT, u_code, u_name, b_node, unit.chat)
                        role(unit.head, RoleName.UNIT_HEAD, u_node.code)

    for code, node in existing.items():
        if code not in seen and node.active:
            node.active = False
            report.deactivated.append(code)
    for dept in model.departments:
        for ref in dept.people:
            people[ref.id] = ref.name

    now = clock.now()
    for pid, name in people.items():
        person = await db.get(Person, pid)
        if person is None:
            db.add(Person(id=pid, name=name, created_at=now))
        else:
            person.name = name
    report.people = len(people)
    await db.flush()

    await db.execute(delete(Role))
    for pid, role_name, code in sorted(roles):
        db.add(Role(person_id=pid, role=role_name, node_id=existing[code].id))
    report.roles = len(roles)

    cats = {c.code: c for c in (await db.scalars(select(Category))).all()}
    old_sla = {code: (c.sla_seconds, c.sla_unit) for code, c in cats.items()}
    for c in cats.values():
        c.active = False
    for i, cat in enumerate(model.categories):
        row = cats.get(cat.code)
        if row is None:
            row = Category(code=cat.code)
            db.add(row)
        row.name_zh = cat.name["zh_CN"]
        row.name_en = cat.name.get("en") or cat.name["zh_CN"]
        row.sla_seconds = cat.sla
        row.sla_unit = cat.sla_unit
        row.urgent = cat.urgent
        row.check_required = cat.check
        # NULL when there are none (a registry without keywords stores what it did); set only
        # when changed: a JSON column given None would store the JSON text 'null'.
        if (row.keywords or []) != cat.keywords:
            row.keywords = list(cat.keywords) or None
        row.active = True
        row.position = i
    report.categories = len(model.categories)

    # Departments are matched by code and never deleted (whistles refer to them); their
    # people are replaced wholesale, like roles.
    depts = {d.code: d for d in (await db.scalars(select(Department))).all()}
    for d in depts.values():
        d.active = False
    for i, dept in enumerate(model.departments):
        d_row = depts.get(dept.code)
        if d_row is None:
            d_row = Department(code=dept.code)
            db.add(d_row)
            depts[dept.code] = d_row
        d_row.name = dept.name
        d_row.chat_id = dept.chat
        d_row.active = True
        d_row.position = i
    await db.execute(delete(DepartmentMember))
    await db.flush()
    for dept in model.departments:
        for pid in dict.fromkeys(ref.id for ref in dept.people):
            db.add(DepartmentMember(department_id=depts[dept.code].id, person_id=pid))
    report.departments = len(model.departments)

    settings = await db.get(OrgSettings, 1)
    old_policy = _timing(settings) if settings is not None else None
    new_settings = settings is None
    if settings is None:
        settings = OrgSettings(id=1)
        db.add(settings)
    policy = model.policy
    settings.timezone = model.timezone
    settings.locale = model.locale
    settings.verify_within = policy.verify_within
    settings.remind_at = policy.remind_at
    settings.overdue_repeat = policy.overdue_repeat
    settings.escalate_after = policy.escalate_after
    settings.rating_within = policy.rating_within
    settings.max_extensions = policy.max_extensions
    settings.extension_answer_within = policy.extension_answer_within
    settings.check_all = policy.check
    settings.check_within = policy.check_within
    settings.whistle_ack_within = policy.whistle_ack_within
    settings.digest_at = policy.digest_at
    settings.duplicate_window = policy.duplicate_window
    settings.duplicate_radius = policy.duplicate_radius
    settings.patrol_radius = policy.patrol_radius
    settings.calendar = model.calendar.stored() if model.calendar is not None else None
    settings.score_weights = (model.assessment.weights.stored()
                              if model.assessment is not None else None)
    settings.care_kinds = ([k.model_dump() for k in model.care_kinds]
                           if model.care_kinds else None)
    if policy.quiet_hours:
        settings.quiet_start, settings.quiet_end = policy.quiet_hours.split("-")
    else:
        settings.quiet_start = settings.quiet_end = None
    report.changed_categories = {c.code for c in model.categories if c.code in old_sla
                                 and old_sla[c.code] != (c.sla, c.sla_unit)}
    report.policy_changed = old_policy not in (None, _timing(settings))
    nulls = _explicit_nulls(settings) if new_settings else []
    await db.flush()
    if nulls:
        await db.refresh(settings, nulls)  # read back what was written: NULL
    return report


def _explicit_nulls(row: Base) -> list[str]:
    """A new row's attributes set to None where the column has a default: SQL NULL for each,
    or the INSERT would leave them out and the default would stand in for the registry's
    null (issue 20, defect 14: `digest_at: null` stored as 08:30 on the first load, and
    `duplicate_window: null` as 3d). Returns their names (expired by the flush)."""
    state = inspect(row)
    names = []
    for attr in state.mapper.column_attrs:
        column = attr.columns[0]
        has_default = column.default is not None or column.server_default is not None
        if has_default and attr.key in state.dict and state.dict[attr.key] is None:
            setattr(row, attr.key, null())
            names.append(attr.key)
    return names


def _place_geo(node: Node, boundary: Any, point: list[float] | None) -> None:
    """A place's boundary and point as the registry gives them (WGS-84), set only when
    changed: an unchanged registry changes no row (nor the directory's version)."""
    if node.boundary != boundary:
        # SQL NULL, not the JSON text 'null', when a boundary is removed.
        node.boundary = boundary if boundary is not None else null()
    lon, lat = point if point is not None else (None, None)
    if (node.lon, node.lat) != (lon, lat):
        node.lon, node.lat = lon, lat


def _timing(row: OrgSettings) -> tuple[object, ...]:
    """What of the org settings the timers depend on."""
    return (row.timezone, row.verify_within, row.remind_at, row.overdue_repeat,
            row.escalate_after, row.rating_within, row.quiet_start, row.quiet_end,
            row.extension_answer_within, row.check_within, row.whistle_ack_within,
            row.calendar)
