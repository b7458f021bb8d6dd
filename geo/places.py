"""From located indices to :class:`onemap.records.Place` records: the pipeline's view of geo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from onemap.geo.boundaries import AdminMap
from onemap.geo.locator import Locator
from onemap.records import Place


class PlaceIndex:
    """The map and its locator, built once per worker; ``find`` works on whole batches."""

    def __init__(self, admin_map: AdminMap) -> None:
        self.admin_map = admin_map
        self.locator = Locator(admin_map)
        village = admin_map.village
        self._village_population = dict(zip(village.codes, village.population.tolist(),
                                            strict=True))
        # Villages are shown by their short name (美平社区, not 美平社区居委会).
        self._village_names = np.array([*village.short_names, ""])

    @classmethod
    def load(cls, boundaries_dir: Path | None = None) -> PlaceIndex:
        admin_map = AdminMap.load_default() if boundaries_dir is None else \
            AdminMap.from_files(boundaries_dir)
        return cls(admin_map)

    def find(self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> list[Place]:
        """One Place per point; out-of-area points get an empty Place (never dropped)."""
        located = self.locator.locate(lon, lat)
        m = self.admin_map
        columns = (
            m.city.code_array[located.city_idx], m.city.name_array[located.city_idx],
            m.district.code_array[located.district_idx],
            m.district.name_array[located.district_idx],
            m.town.code_array[located.town_idx], m.town.name_array[located.town_idx],
            m.village.code_array[located.village_idx],
            self._village_names[located.village_idx],
        )
        return [Place(*map(str, row)) for row in zip(*columns, strict=True)]

    def population(self, village_code: str) -> int:
        return int(self._village_population.get(village_code, 0))
