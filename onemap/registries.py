"""Registries: the sources OneMap knows (water stations, later hazard points and sites).

Loaded strictly from data files; the shipped defaults live in ``onemap.fixtures``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import model_validator

from onemap.datafiles import StrictModel, load_csv_models
from onemap.errors import ConfigError

M = TypeVar("M", bound=StrictModel)

WaterKind = Literal["river", "reservoir", "tide", "waterlogging"]


class WaterStation(StrictModel):
    """A water station and its own thresholds (metres above its datum; depth for ponding)."""

    station_id: str
    name: str
    kind: WaterKind
    lon: float
    lat: float
    warning_level_m: float
    guaranteed_level_m: float
    flood_limit_level_m: float | None = None
    expected_interval_s: int = 300
    datum: str = ""

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> WaterStation:
        if self.guaranteed_level_m < self.warning_level_m:
            raise ValueError("guaranteed_level_m (保证水位) is below warning_level_m (警戒水位)")
        if self.kind == "reservoir" and self.flood_limit_level_m is None:
            raise ValueError("a reservoir needs flood_limit_level_m (汛限水位)")
        return self

    def threshold(self, name: str) -> float | None:
        return {
            "warning": self.warning_level_m,
            "guaranteed": self.guaranteed_level_m,
            "flood_limit": self.flood_limit_level_m,
        }[name]


def default_registries_dir() -> Path:
    return Path(str(importlib.resources.files("onemap.fixtures").joinpath("registries")))


def load_water_stations(path: Path) -> dict[str, WaterStation]:
    return _unique(load_csv_models(WaterStation, path), "station_id", path)


class WeatherStation(StrictModel):
    """An automatic weather station (rain gauge, anemometer)."""

    station_id: str
    name: str
    lon: float
    lat: float
    expected_interval_s: int = 300


HazardPointKind = Literal["landslide", "collapse", "debris_flow", "subsidence"]


class HazardPoint(StrictModel):
    """A geological-hazard point (隐患点) under monitoring, and who answers for it.

    Thresholds left empty fall back to the defaults in ``rules/default/geohazard.yaml``.
    """

    point_id: str
    name: str
    kind: HazardPointKind
    lon: float
    lat: float
    households: int = 0
    population: int = 0
    responsible_name: str
    responsible_phone: str
    expected_interval_s: int = 600
    rate_blue_mm_d: float | None = None
    rate_yellow_mm_d: float | None = None
    rate_orange_mm_d: float | None = None
    rate_red_mm_d: float | None = None


def load_weather_stations(path: Path) -> dict[str, WeatherStation]:
    return _unique(load_csv_models(WeatherStation, path), "station_id", path)


def load_hazard_points(path: Path) -> dict[str, HazardPoint]:
    return _unique(load_csv_models(HazardPoint, path), "point_id", path)


def _unique(rows: list[M], key: str, path: Path) -> dict[str, M]:
    out: dict[str, M] = {}
    for row in rows:
        value = getattr(row, key)
        if value in out:
            raise ConfigError(f"duplicate {key} {value!r}", path=str(path), field=key)
        out[value] = row
    return out


@dataclasses.dataclass(frozen=True)
class Registries:
    """Every source OneMap knows, by feed."""

    water: dict[str, WaterStation]
    weather: dict[str, WeatherStation]
    hazard_points: dict[str, HazardPoint]

    def for_feed(self, feed: str,
                 ) -> Mapping[str, WaterStation | WeatherStation | HazardPoint] | None:
        """The registry of a feed's sources; None for feeds whose records say where they
        are (incidents, CAP warnings). (Asked for every reading by ingest and by the rules:
        compared, not looked up in a dict built for each call.)"""
        if feed == "weather":
            return self.weather
        if feed == "water":
            return self.water
        if feed == "geohazard":
            return self.hazard_points
        return None

    @classmethod
    def load(cls, directory: Path) -> Registries:
        return cls(
            water=load_water_stations(directory / "water_stations.csv"),
            weather=load_weather_stations(directory / "weather_stations.csv"),
            hazard_points=load_hazard_points(directory / "hazard_points.csv"),
        )
