"""The data the oracle works from, read as plain files: boundaries, registries, rule YAML.

Nothing here uses OneMap's own loaders or models: GeoJSON through geopandas, CSV through
pandas, rule files through ``yaml.safe_load``. That keeps the oracle independent of the
code it checks (a loader bug would otherwise be shared by both sides).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
BOUNDARIES = REPO / "fixtures" / "zhuhai"
REGISTRIES = REPO / "fixtures" / "registries"
RULES = REPO / "rules" / "default"

#: Warning levels as integers, in the order of the national grading (IV..I).
LEVELS = ("none", "blue", "yellow", "orange", "red")
COLOURS = LEVELS[1:]
#: The four map levels, coarse to fine, and the Place field of each.
MAP_LEVELS = ("city", "district", "town", "village")
FEEDS = ("weather", "water", "geohazard", "incident", "cap")


def level_of(name: str) -> int:
    return LEVELS.index(name.strip().lower())


@dataclasses.dataclass(frozen=True)
class OracleData:
    """Everything the oracle reads, loaded once.

    ``rules`` maps a rule name (``rainstorm``, ``wind``, ... the ``rule:`` of each file) to
    the file's parsed YAML; ``areas`` maps a map level to its GeoDataFrame.
    """

    rules: dict[str, dict[str, Any]]
    areas: dict[str, gpd.GeoDataFrame]
    weather_stations: pd.DataFrame
    water_stations: pd.DataFrame
    hazard_points: pd.DataFrame
    sites: pd.DataFrame

    @classmethod
    def load(cls, rules_dir: Path = RULES, boundaries: Path = BOUNDARIES,
             registries: Path = REGISTRIES) -> OracleData:
        rules: dict[str, dict[str, Any]] = {}
        for path in sorted(rules_dir.glob("*.yaml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            rules[str(doc["rule"])] = doc
        areas = {}
        for level in MAP_LEVELS:
            frame = gpd.read_file(boundaries / f"{level}.geojson")
            frame["parent_code"] = frame["parent_code"].fillna("").astype(str)
            areas[level] = frame.sort_values("code").reset_index(drop=True)

        def registry(name: str, key: str) -> pd.DataFrame:
            frame = pd.read_csv(registries / name, dtype={key: str}, keep_default_na=True)
            return frame.set_index(key, drop=False)

        return cls(rules=rules, areas=areas,
                   weather_stations=registry("weather_stations.csv", "station_id"),
                   water_stations=registry("water_stations.csv", "station_id"),
                   hazard_points=registry("hazard_points.csv", "point_id"),
                   sites=registry("vulnerable_sites.csv", "site_id"))

    def registry(self, feed: str) -> pd.DataFrame | None:
        """The registry of a feed's sources (None: the record itself says where it is)."""
        return {"weather": self.weather_stations, "water": self.water_stations,
                "geohazard": self.hazard_points}.get(feed)

    def with_rule_value(self, rule: str, path: tuple[str, ...], value: Any) -> OracleData:
        """A copy with one value of one rule file changed (to show the oracle can fail)."""
        rules = copy.deepcopy(self.rules)
        node: Any = rules[rule]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return dataclasses.replace(self, rules=rules)

    def population(self, place: tuple[str, str, str, str]) -> int:
        """Residents of the finest unit of a place (village; else town, district, city)."""
        for level, code in reversed(list(zip(MAP_LEVELS, place, strict=True))):
            if code:
                frame = self.areas[level]
                hit = frame.loc[frame["code"] == code, "population"]
                return int(hit.iloc[0]) if len(hit) else 0
        return 0
