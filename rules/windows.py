"""Event-time series for per-source state: rolling sums, rates, late and duplicate readings.

A series is a list of ``[t, value]`` pairs (``t`` = epoch seconds of the event time), sorted by
``t``, kept JSON-able so it can live in a faust table. All functions are pure: they return a
new list and never look at the wall clock.
"""

from __future__ import annotations

import bisect
import enum
import operator

Series = list[list[float]]

_LOW, _HIGH = float("-inf"), float("inf")
_VALUE = operator.itemgetter(1)


class Arrival(enum.Enum):
    """How a reading relates to what the source already reported."""

    IN_ORDER = "in-order"
    LATE = "late"  # older than the newest reading, within the allowed lateness: applied
    DUPLICATE = "duplicate"  # same event time as a reading already applied: counted once
    TOO_LATE = "too-late"  # older than the allowed lateness: dead letter


def classify(series: Series, t: float, newest: float | None, lateness_s: float) -> Arrival:
    """Where a reading at ``t`` falls.

    >>> s = [[0.0, 1.0], [300.0, 2.0]]
    >>> [classify(s, t, 300.0, 600).value for t in (600, 300, 100, -400)]
    ['in-order', 'duplicate', 'late', 'too-late']
    """
    if newest is None or t > newest:
        return Arrival.IN_ORDER
    i = bisect.bisect_left(series, [t, float("-inf")])
    if i < len(series) and series[i][0] == t:
        return Arrival.DUPLICATE
    if newest - t > lateness_s:
        return Arrival.TOO_LATE
    return Arrival.LATE


def insert(series: Series, t: float, value: float, keep_s: float) -> Series:
    """The series with ``(t, value)`` in event-time order, older than ``keep_s`` before the
    newest point dropped.

    >>> insert([[0.0, 1.0], [600.0, 3.0]], 300.0, 2.0, keep_s=3600)
    [[0.0, 1.0], [300.0, 2.0], [600.0, 3.0]]
    >>> insert([[0.0, 1.0]], 7200.0, 2.0, keep_s=3600)
    [[7200.0, 2.0]]
    """
    point = [float(t), float(value)]
    if not series or series[-1][0] < point[0]:  # in order: the common case
        out = [*series, point]
    else:
        out = list(series)
        bisect.insort(out, point)
    horizon = out[-1][0] - keep_s
    if out[0][0] >= horizon:
        return out
    return out[bisect.bisect_left(out, [horizon, float("-inf")]):]


def window_sum(series: Series, end: float, seconds: float) -> float:
    """Sum of values with ``end - seconds < t <= end`` (increments in the window).

    >>> s = [[0.0, 10.0], [3600.0, 20.0], [7200.0, 30.0]]
    >>> window_sum(s, 7200.0, 3600), window_sum(s, 7200.0, 7200), window_sum(s, 7200.0, 7201)
    (30.0, 50.0, 60.0)
    """
    lo = bisect.bisect_right(series, [end - seconds, _HIGH])
    hi = bisect.bisect_right(series, [end, _HIGH])
    # the same additions in the same order as summing the pairs one by one (so the same
    # float), without a Python-level generator: this runs several times per reading
    return float(sum(map(_VALUE, series[lo:hi])))


def window_max(series: Series, end: float, seconds: float) -> float | None:
    """Largest value with ``end - seconds <= t <= end`` (None if there is none).

    >>> window_max([[0.0, 5.0], [600.0, 9.0], [1200.0, 4.0]], 1200.0, 600.0)
    9.0
    >>> window_max([[0.0, 5.0]], 1200.0, 600.0) is None
    True
    """
    lo = bisect.bisect_left(series, [end - seconds, _LOW])
    hi = bisect.bisect_right(series, [end, _HIGH])
    return max(map(_VALUE, series[lo:hi])) if hi > lo else None


def rate_per_hour(series: Series, end: float, seconds: float) -> float | None:
    """Least-squares slope of the values over ``(end - seconds, end]``, per hour.

    None when fewer than two points fall in the window.

    >>> rate_per_hour([[0.0, 1.0], [1800.0, 1.5], [3600.0, 2.0]], 3600.0, 3600.0)
    1.0
    """
    lo = bisect.bisect_right(series, [end - seconds, float("inf")])  # (end - seconds, end]
    hi = bisect.bisect_right(series, [end, float("inf")])
    points = series[lo:hi]
    if len(points) < 2:
        return None
    n = len(points)
    mt = sum(p[0] for p in points) / n
    mv = sum(p[1] for p in points) / n
    den = sum((p[0] - mt) ** 2 for p in points)
    if den == 0:
        return None
    slope = sum((p[0] - mt) * (p[1] - mv) for p in points) / den
    return round(slope * 3600.0, 6)


def hours_to_reach(value: float, target: float, rate_h: float | None) -> float | None:
    """Linear extrapolation: hours until ``value`` reaches ``target`` at ``rate_h`` per hour.

    >>> hours_to_reach(1.0, 2.0, 0.5), hours_to_reach(1.0, 2.0, -0.1), hours_to_reach(3, 2, 1)
    (2.0, None, 0.0)
    """
    if value >= target:
        return 0.0
    if rate_h is None or rate_h <= 0:
        return None
    return round((target - value) / rate_h, 3)
