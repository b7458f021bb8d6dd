"""Registries: the sources OneMap knows (water stations, later hazard points and sites).

Loaded strictly from data files; the shipped defaults live in ``onemap.fixtures``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from onemap.datafiles import StrictModel, load_csv_models
from onemap.errors import ConfigError

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
    stations: dict[str, WaterStation] = {}
    for station in load_csv_models(WaterStation, path):
        if station.station_id in stations:
            raise ConfigError(f"duplicate station_id {station.station_id!r}", path=str(path),
                              field="station_id")
        stations[station.station_id] = station
    return stations
