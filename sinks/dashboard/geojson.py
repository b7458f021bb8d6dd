"""The four-level boundaries as GeoJSON for the wall map, simplified per level.

Why: the browser draws every area itself (no internet tiles), so each level is served once as
a compact FeatureCollection: coordinates simplified to what the level is shown at and rounded
to about a metre, a label point inside each area, and the codes the area colours are keyed by.
The collections are built once at start-up; the map never changes while the server runs.

>>> from onemap.geo.boundaries import AdminLevel, AdminMap
>>> fc = orjson.loads(level_geojson(AdminMap.load_default(), AdminLevel.DISTRICT))
>>> sorted(f["properties"]["name"] for f in fc["features"])
['斗门区', '金湾区', '香洲区']
"""

from __future__ import annotations

from typing import Any, Final

import orjson
import shapely

from onemap.geo.boundaries import AdminLevel, AdminMap

#: Simplification tolerance in degrees per level (~1 px at the zoom each level is shown at).
TOLERANCE: Final = {AdminLevel.CITY: 0.0015, AdminLevel.DISTRICT: 0.001,
                    AdminLevel.TOWN: 0.0004, AdminLevel.VILLAGE: 0.0001}
DECIMALS: Final = 5


def level_geojson(admin: AdminMap, level: AdminLevel) -> bytes:
    """One level as a GeoJSON FeatureCollection (WGS84, lon/lat), as UTF-8 bytes."""
    table = admin[level]
    parent_codes = admin[level.parent].codes if level.parent is not None else ()
    geoms = shapely.set_precision(
        shapely.simplify(table.geometry, TOLERANCE[level], preserve_topology=True),
        10 ** -DECIMALS)
    labels = shapely.point_on_surface(table.geometry)
    features: list[dict[str, Any]] = []
    for i, code in enumerate(table.codes):
        geom = geoms[i]
        if geom is None or geom.is_empty:
            continue
        label = labels[i]
        parent = int(table.parent[i])
        features.append({
            "type": "Feature",
            "properties": {
                "code": code,
                "name": table.names[i],
                "short_name": table.short_names[i] or table.names[i],
                "level": level.label,
                "parent_code": parent_codes[parent] if parent >= 0 else "",
                "population": int(table.population[i]),
                "label": [round(label.x, DECIMALS), round(label.y, DECIMALS)],
            },
            "geometry": shapely.geometry.mapping(geom),
        })
    return orjson.dumps({"type": "FeatureCollection", "level": level.label,
                         "features": features})


def all_levels(admin: AdminMap) -> dict[str, bytes]:
    """Level label → GeoJSON bytes for the four levels."""
    return {level.label: level_geojson(admin, level) for level in AdminLevel}


def bounds(admin: AdminMap) -> list[list[float]]:
    """[[south, west], [north, east]] of the whole map, as Leaflet's fitBounds takes it."""
    minx, miny, maxx, maxy = admin.bounds
    return [[miny, minx], [maxy, maxx]]
