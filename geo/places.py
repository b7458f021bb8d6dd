"""From located indices to :class:`onemap.records.Place` records: the pipeline's view of geo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely

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
        # every unit's population: the sum of its villages' (a village adds to each ancestor)
        self._area_population: dict[str, int] = {}
        for row, people in zip(village.chain.tolist(), village.population.tolist(),
                               strict=True):
            for table, index in zip(admin_map.levels, row, strict=True):
                if index >= 0:
                    code = str(table.codes[index])
                    self._area_population[code] = self._area_population.get(code, 0) + int(people)
        # Villages are shown by their short name (美平社区, not 美平社区居委会).
        self._village_names = np.array([*village.short_names, ""])
        self._trees: dict[object, shapely.STRtree] = {}

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

    def find_area(self, wkt: str) -> Place:
        """The smallest unit that holds all of an area's overlap with the map.

        A warning polygon over two districts is the city's; over two towns of one district,
        that district's; and so on. An area that misses the map is out of area.
        """
        area = shapely.from_wkt(wkt)
        m = self.admin_map
        chain: list[tuple[str, str]] = []
        for table in (m.city, m.district, m.town, m.village):
            tree = self._trees.get(table.level)
            if tree is None:
                tree = self._trees[table.level] = shapely.STRtree(table.geometry)
            hits = [int(i) for i in tree.query(area, predicate="intersects")]
            if chain:  # only children of the unit found one level up
                hits = [i for i in hits if table.codes[i].startswith(chain[-1][0][:4])
                        and (table.level == m.district.level
                             or table.codes[i].startswith(chain[-1][0]))]
            if len(hits) != 1:
                break
            names = self._village_names if table.level == m.village.level else table.name_array
            chain.append((table.codes[hits[0]], str(names[hits[0]])))
        flat = [x for code_name in chain for x in code_name]
        return Place(*flat, *([""] * (8 - len(flat))))

    def find_codes(self, codes: list[str]) -> tuple[Place, float, float] | None:
        """The smallest unit holding every unit named by ``codes`` (an area given by codes,
        e.g. CAP geocodes), with a point inside it; None if no code is on the map.

        >>> index = PlaceIndex.load()
        >>> place, lon, lat = index.find_codes(["440402001", "440402002"])
        >>> place.district_name, place.town_code
        ('香洲区', '')
        """
        m = self.admin_map
        chains = []
        for code in codes:
            unit = m.find(code)
            if unit is not None:
                chains.append([int(x) for x in m.levels[unit.level].chain[unit.index]])
        if not chains:
            return None
        parts: list[str] = []
        deepest = None
        for level, table in enumerate(m.levels):
            column = {chain[level] for chain in chains}
            if len(column) != 1 or -1 in column:
                break
            i = column.pop()
            names = self._village_names if table.level == m.village.level else table.name_array
            parts += [table.codes[i], str(names[i])]
            deepest = table.geometry[i]
        if deepest is None:
            return None
        point = deepest.representative_point()
        return Place(*parts, *([""] * (8 - len(parts)))), float(point.x), float(point.y)

    def area_population(self, code: str) -> int:
        """People living in a unit of any level (its villages' sum); 0 for unknown codes.

        >>> index = PlaceIndex.load()
        >>> index.area_population("440400") == sum(
        ...     index.area_population(c) for c in index.admin_map.district.codes)
        True
        """
        return self._area_population.get(code, 0)

    def population(self, village_code: str) -> int:
        return int(self._village_population.get(village_code, 0))
