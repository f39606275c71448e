"""Where a shared location falls: GCJ-02 ↔ WGS-84, and the grid whose boundary holds a point.

Telegram sends WGS-84; maps drawn in China (高德, 腾讯) use GCJ-02, a published obfuscation of
it. The registry says which its coordinates are (`crs`); everything stored is WGS-84, and a
link to 高德 is converted back to GCJ-02.

A stored boundary (nodes.boundary) is either one ring `[[lon, lat], …]` or, for a GeoJSON
polygon with holes or a multipolygon, the GeoJSON MultiPolygon coordinates
`[[[[lon, lat], …], …], …]`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.org.directory import Directory, NodeKind, Place

if TYPE_CHECKING:
    # shapely costs about 0.3 s to import: only routing and the registry's checks load it, not
    # every start (the coordinate conversion and the map link need none of it).
    from shapely.geometry import MultiPolygon, Polygon  # type: ignore[import-untyped]

_A = 6378245.0  # the Krasovsky ellipsoid's semi-major axis the GCJ-02 formula uses
_EE = 0.00669342162296594323


def out_of_china(lon: float, lat: float) -> bool:
    """GCJ-02 shifts only points in (a box round) China; elsewhere it is WGS-84."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _d_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2 / 3
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2 / 3
    return ret


def _d_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2 / 3
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2 / 3
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2 / 3
    return ret


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """The public GCJ-02 formula (lon, lat in degrees)."""
    if out_of_china(lon, lat):
        return lon, lat
    d_lat = _d_lat(lon - 105.0, lat - 35.0)
    d_lon = _d_lon(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lon + d_lon, lat + d_lat


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """The inverse, by iteration: the shift changes slowly, so a few steps reach 1e-9°."""
    if out_of_china(lon, lat):
        return lon, lat
    w_lon, w_lat = lon, lat
    for _ in range(30):
        g_lon, g_lat = wgs84_to_gcj02(w_lon, w_lat)
        d_lon, d_lat = lon - g_lon, lat - g_lat
        w_lon, w_lat = w_lon + d_lon, w_lat + d_lat
        if abs(d_lon) < 1e-10 and abs(d_lat) < 1e-10:
            break
    return w_lon, w_lat


EARTH_RADIUS = 6_371_008.8  # metres, the mean radius


def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance of two WGS-84 points (haversine): within a metre or two at
    the tens of metres a duplicate is looked for at."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS * math.asin(math.sqrt(min(1.0, a)))


def amap_url(lon: float, lat: float) -> str:
    """A 高德 map marker at a stored (WGS-84) point."""
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    return f"https://uri.amap.com/marker?position={g_lon:.6f},{g_lat:.6f}"


@dataclass(frozen=True)
class Venue:
    """A case's place as a Telegram venue message (sent to staff who ask for it with 📍):
    kept in an outbox row's media as `{"venue": [lat, lon, title, address]}`, after the
    photos, like a voice note."""

    latitude: float
    longitude: float
    title: str
    address: str

    def media(self) -> dict[str, list[Any]]:
        return {"venue": [self.latitude, self.longitude, self.title, self.address]}


def venue_of(entry: Any) -> Venue | None:
    """The venue of an outbox media entry; None for a photo's file_id or a voice."""
    value = entry.get("venue") if isinstance(entry, dict) else None
    if not (isinstance(value, list) and len(value) == 4):
        return None
    lat, lon, title, address = value
    return Venue(float(lat), float(lon), str(title), str(address))


# --- boundaries ---------------------------------------------------------------------------------


def is_ring(value: Any) -> bool:
    """[[lon, lat], …]: one ring (else GeoJSON MultiPolygon coordinates)."""
    return (isinstance(value, list | tuple) and bool(value)
            and isinstance(value[0], list | tuple) and bool(value[0])
            and isinstance(value[0][0], int | float))


def geometry(stored: Any) -> Polygon | MultiPolygon:
    """The shapely geometry of a stored boundary."""
    from shapely.geometry import Polygon, shape

    if is_ring(stored):
        return Polygon([(float(p[0]), float(p[1])) for p in stored])
    return shape({"type": "MultiPolygon", "coordinates": stored})


def polygon_problem(stored: Any) -> str | None:
    """Why a boundary is not a valid simple polygon (shapely's reason), or None."""
    from shapely.validation import explain_validity  # type: ignore[import-untyped]

    try:
        shape_ = geometry(stored)
    except (ValueError, TypeError, IndexError) as exc:
        return str(exc)
    if shape_.is_empty or shape_.area <= 0:
        return "it has no area"
    if not shape_.is_valid:
        return str(explain_validity(shape_))
    return None


def covers(stored: Any, lon: float, lat: float) -> bool:
    """Whether a stored boundary holds the point (a point on its edge counts)."""
    from shapely.geometry import Point

    return bool(geometry(stored).covers(Point(lon, lat)))


def map_coords(stored: Any, convert: Any) -> Any:
    """A boundary (either form) with every point passed through `convert(lon, lat)`."""
    if is_ring(stored):
        return [list(convert(float(p[0]), float(p[1]))) for p in stored]
    return [map_coords(part, convert) for part in stored]


# Two grids' boundaries may overlap by this many square metres at most: where two drawings
# of a shared edge disagree by centimetres. More, and a location could belong to both.
OVERLAP_TOLERANCE = 10.0


def square_metres(shape_: Any) -> float:
    """The area of a WGS-84 geometry in square metres, on a local equirectangular projection
    at its centroid's latitude (x = R·cos φ₀·λ, y = R·φ): a linear map of the degrees, so the
    area in square degrees times one factor; within a fraction of a percent over a district."""
    if shape_.is_empty:
        return 0.0
    degree = math.radians(1) * EARTH_RADIUS
    return float(shape_.area) * degree * degree * math.cos(math.radians(shape_.centroid.y))


def overlaps(boundaries: Sequence[Any]) -> list[tuple[int, int, float]]:
    """The pairs (i, j), i < j, of stored WGS-84 boundaries that overlap by more than
    OVERLAP_TOLERANCE square metres, with the overlap's area in square metres. Touching
    (a shared edge or corner) is no overlap."""
    from shapely import STRtree  # type: ignore[import-untyped]

    shapes = [geometry(b) for b in boundaries]
    tree = STRtree(shapes)
    found = []
    for i, shape_ in enumerate(shapes):
        for j in sorted(int(k) for k in tree.query(shape_)):
            if j <= i:
                continue
            area = square_metres(shape_.intersection(shapes[j]))
            if area > OVERLAP_TOLERANCE:
                found.append((i, j, area))
    return found




@dataclass(frozen=True)
class Router:
    """The grids with a boundary, indexed once per directory version."""

    tree: Any
    geometries: tuple[Any, ...]
    grids: tuple[Place, ...]
    buildings: dict[int, tuple[Place, ...]]  # grid id -> its active buildings with a point

    def grid_at(self, lon: float, lat: float) -> Place | None:
        """The grid whose boundary covers (a point on the edge counts) the WGS-84 point."""
        from shapely.geometry import Point

        point = Point(lon, lat)
        hits = sorted(int(i) for i in self.tree.query(point))
        for i in hits:
            if self.geometries[i].covers(point):
                return self.grids[i]
        return None

    def nearest_building(self, grid: Place, lon: float, lat: float) -> Place | None:
        """The building of `grid` nearest the point, among those with a point."""
        scale = math.cos(math.radians(lat))  # a degree of longitude is shorter up north

        def distance(b: Place) -> float:
            assert b.lon is not None and b.lat is not None
            return math.hypot((b.lon - lon) * scale, b.lat - lat)

        candidates: Sequence[Place] = self.buildings.get(grid.id, ())
        return min(candidates, key=distance, default=None)


_routers: dict[int, tuple[weakref.ref[Directory], Router]] = {}


def router(d: Directory) -> Router:
    """The router of directory `d`, built at its first use (a directory is one version)."""
    known = _routers.get(id(d))
    if known is not None and known[0]() is d:
        return known[1]
    grids = tuple(p for p in d.places.values()
                  if p.kind == NodeKind.GRID and p.active and p.boundary)
    geometries = tuple(geometry(g.boundary) for g in grids)
    buildings: dict[int, list[Place]] = {}
    for b in d.buildings():
        if b.parent_id is not None and b.lon is not None and b.lat is not None:
            buildings.setdefault(b.parent_id, []).append(b)
    from shapely import STRtree

    built = Router(tree=STRtree(list(geometries)), geometries=geometries, grids=grids,
                   buildings={k: tuple(v) for k, v in buildings.items()})
    _routers[id(d)] = (weakref.ref(d), built)
    weakref.finalize(d, _routers.pop, id(d), None)  # dropped with its directory
    return built
