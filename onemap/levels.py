"""The four national warning colours, used everywhere: blue < yellow < orange < red (IV..I)."""

from __future__ import annotations

import enum
from typing import TypeVar

T = TypeVar("T")


class WarningLevel(enum.IntEnum):
    """Warning level; ``NONE`` means below every threshold.

    >>> WarningLevel.RED > WarningLevel.ORANGE > WarningLevel.YELLOW > WarningLevel.BLUE
    True
    >>> WarningLevel.parse("orange").chinese
    '橙色'
    """

    NONE = 0
    BLUE = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def chinese(self) -> str:
        return _CHINESE[self]

    @property
    def roman(self) -> str:
        """National grading: red is level I, blue level IV."""
        return _ROMAN[self]

    @classmethod
    def parse(cls, value: str) -> WarningLevel:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown warning level {value!r}; expected one of "
                "none, blue, yellow, orange, red"
            ) from None


_CHINESE = {
    WarningLevel.NONE: "无预警",
    WarningLevel.BLUE: "蓝色",
    WarningLevel.YELLOW: "黄色",
    WarningLevel.ORANGE: "橙色",
    WarningLevel.RED: "红色",
}
_ROMAN = {
    WarningLevel.NONE: "",
    WarningLevel.BLUE: "IV",
    WarningLevel.YELLOW: "III",
    WarningLevel.ORANGE: "II",
    WarningLevel.RED: "I",
}


#: The four colours from lowest to highest.
COLOURS = (WarningLevel.BLUE, WarningLevel.YELLOW, WarningLevel.ORANGE, WarningLevel.RED)


def require_four_colours(mapping: dict[str, T]) -> dict[str, T]:
    """A rule's per-colour table must name exactly the four colours (a pydantic validator).

    >>> require_four_colours({"blue": 1, "yellow": 2, "orange": 3, "red": 4})["red"]
    4
    >>> require_four_colours({"blue": 1, "red": 4})
    Traceback (most recent call last):
    ...
    ValueError: needs exactly blue, yellow, orange and red (missing: yellow, orange)
    """
    names = [c.label for c in COLOURS]
    missing = [n for n in names if n not in mapping]
    extra = sorted(set(mapping) - set(names))
    if missing or extra:
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"unknown: {', '.join(extra)}"] if extra else [])
        raise ValueError(f"needs exactly blue, yellow, orange and red ({'; '.join(problems)})")
    return mapping
