"""Event-time series for per-source state: rolling sums, rates, late and duplicate readings.

A series is a list of ``(t, value)`` points (``t`` = epoch seconds of the event time), sorted
by ``t``, JSON-able (a point is written as a two-item array) so that it can live in the rules'
changelog. The functions never look at the wall clock, and change no list they are given,
except :func:`insert` a list the caller says is its own (``owned``).

New points are tuples: the cyclic garbage collector stops tracking a tuple of floats, while
it tracks (and scans at every full collection) each two-item list; a worker holds a day of
readings per source, ~160,000 points, which as lists made the collector ~18 % of a worker's
CPU (benchmarks/README.md). Points restored from JSON are lists until they age out, so the
functions here never compare a point with another point as a whole (a tuple and a list do
not compare): only by their items.
"""

from __future__ import annotations

import bisect
import enum
import operator
from collections.abc import Callable, Sequence

#: one reading: (event time, value); a tuple, or a list as restored from JSON
Point = Sequence[float]
Series = list[Point]

#: A point's event time: bisection by it alone (``key=point_time``) is one float comparison
#: per step instead of building a ``[t, ±inf]`` probe and comparing lists; the same index,
#: since a series' values are finite (the feeds reject anything else).
point_time = operator.itemgetter(0)
_VALUE = operator.itemgetter(1)
#: a point's items as a tuple: the order of points (by time, then value) whether each is a
#: tuple or a list
_ITEMS = operator.itemgetter(0, 1)


class Arrival(enum.Enum):
    """How a reading relates to what the source already reported."""

    IN_ORDER = "in-order"
    LATE = "late"  # older than the newest reading, within the allowed lateness: applied
    DUPLICATE = "duplicate"  # same event time as a reading already applied: counted once
    TOO_LATE = "too-late"  # older than the allowed lateness: dead letter


#: The members bound as module constants, for the code that runs at every reading: in
#: Python 3.11 reading a member off an Enum class goes through ``EnumType.__getattr__``
#: (~0.15 µs, ten times a module global's), and the rules read several per reading.
IN_ORDER, LATE, DUPLICATE, TOO_LATE = (Arrival.IN_ORDER, Arrival.LATE, Arrival.DUPLICATE,
                                       Arrival.TOO_LATE)


def classify(series: Series, t: float, newest: float | None, lateness_s: float) -> Arrival:
    """Where a reading at ``t`` falls.

    >>> s = [[0.0, 1.0], [300.0, 2.0]]
    >>> [classify(s, t, 300.0, 600).value for t in (600, 300, 100, -400)]
    ['in-order', 'duplicate', 'late', 'too-late']
    """
    if newest is None or t > newest:
        return IN_ORDER
    i = bisect.bisect_left(series, t, key=point_time)
    if i < len(series) and series[i][0] == t:
        return DUPLICATE
    if newest - t > lateness_s:
        return TOO_LATE
    return LATE


#: Series lists made by the batch in progress, by id (the lists themselves are held, so an
#: id is never reused meanwhile): :func:`insert` changes these in place.
Owned = dict[int, Series]


def insert(series: Series, t: float, value: float, keep_s: float,
           owned: Owned | None = None) -> Series:
    """The series with ``(t, value)`` in event-time order, older than ``keep_s`` before the
    newest point dropped.

    A new list, unless ``series`` is in ``owned``: then it is changed in place and
    returned. Copying a day of points for every reading was the rules stage's largest cost
    (copying and then freeing ~300 references per series, each a cache miss), so the rules
    stage copies a source's series once per batch (the batch's first reading of it, whose
    new list goes into ``owned``; the rules loop keeps ``owned`` across its commits:
    evaluate.Copies) and changes that copy for the later readings. The lists the
    stage's state held before are never changed: a batch that fails leaves them as they
    were.

    >>> insert([[0.0, 1.0], [600.0, 3.0]], 300.0, 2.0, keep_s=3600)
    [[0.0, 1.0], (300.0, 2.0), [600.0, 3.0]]
    >>> insert([(0.0, 1.0)], 7200.0, 2.0, keep_s=3600)
    [(7200.0, 2.0)]
    >>> owned: Owned = {}
    >>> s = insert([(0.0, 1.0)], 300.0, 2.0, 3600, owned)   # copied, now owned
    >>> insert(s, 600.0, 3.0, 3600, owned) is s             # changed in place
    True
    """
    point = (float(t), float(value))
    if owned is None or id(series) not in owned:
        series = list(series)
        if owned is not None:
            owned[id(series)] = series
    # (in place from here; one function, not two: four inserts per weather reading)
    if series and series[-1][0] >= point[0]:  # late (rare): in its place
        series.insert(bisect.bisect_right(series, point, key=_ITEMS), point)
        horizon = series[-1][0] - keep_s
    else:  # in order, the common case
        series.append(point)
        horizon = point[0] - keep_s
    if series[0][0] < horizon:
        # a regular source drops one point as it adds one: look there before bisecting
        cut = 1 if series[1][0] >= horizon else bisect.bisect_left(series, horizon, 1,
                                                                    key=point_time)
        del series[:cut]
    return series


def window_sum(series: Series, end: float, seconds: float) -> float:
    """Sum of values with ``end - seconds < t <= end`` (increments in the window).

    >>> s = [[0.0, 10.0], [3600.0, 20.0], [7200.0, 30.0]]
    >>> window_sum(s, 7200.0, 3600), window_sum(s, 7200.0, 7200), window_sum(s, 7200.0, 7201)
    (30.0, 50.0, 60.0)
    """
    lo = bisect.bisect_right(series, end - seconds, key=point_time)
    hi = bisect.bisect_right(series, end, key=point_time)
    # the same additions in the same order as summing the pairs one by one (so the same
    # float), without a Python-level generator
    return float(sum(map(_VALUE, series[lo:hi])))


#: What :func:`carry_bound` carries from a source's reading to its next: ``bound`` is known
#: to be at least the window's aggregate (``window_sum`` or ``window_max`` of a series over
#: ``seconds`` ending at ``end``), with what recognises the series at its next reading (which
#: may be the same list changed in place, see :func:`insert`): its length and its first and
#: last points, as objects (compared by identity: a point is never changed). Made by
#: :func:`window_bound`: (length, first, last, end, seconds, bound).
#:
#: A plain tuple, not an instance of a class: one is made per window per reading and kept
#: until the source's next reading, minutes later, so it outlives the collector's young
#: generations; the cyclic garbage collector tracks an instance for as long as it lives
#: (and every full collection visits it: with a network of 10,000 sources ~20,000 of them),
#: while a tuple of numbers and points is untracked once a collection has seen it.
WindowBound = tuple[int, Point | None, Point | None, float, float, float]


def window_bound(series: Series, end: float, seconds: float, bound: float) -> WindowBound:
    """A bound of ``series``' window of ``seconds`` ending at ``end``, for its next reading.

    >>> window_bound([(0.0, 1.0), (300.0, 2.0)], 300.0, 3600.0, 3.0)
    (2, (0.0, 1.0), (300.0, 2.0), 300.0, 3600.0, 3.0)
    """
    if series:
        return len(series), series[0], series[-1], end, seconds, bound
    return 0, None, None, end, seconds, bound


def carry_bound(previous: WindowBound | None, series: Series, end: float, seconds: float,
                combine: Callable[[float, float], float] = operator.add) -> float | None:
    """An upper bound of the window's aggregate over ``series`` (a sum: ``combine`` adds; a
    maximum: ``combine`` is ``max``) carried from ``previous`` without computing it, or None
    when it cannot be carried (then compute it).

    ``previous.end`` must be the time of the newest reading of its series or later (as the
    rules' windows end at the source's newest reading), and ``series`` must be what the
    bound's series became through at most one :func:`insert` (as the rules stage makes a
    bound at every reading of the source). The bound can be carried when the window only
    moved forward (``end`` at or after ``previous.end``, the same length) and the series is
    unchanged (the same first and last points, the same length), or had one point appended
    and only its oldest points dropped (its last but one point is the bound's last point) -
    checked by the identity of the points, as a point is never changed and a series
    restored from the changelog holds new ones. The window then holds a subset of the points
    it held, plus at most the new one, so the old bound combined with the new value is a
    bound: for a maximum plainly; for a sum as the values are never negative (rain: the
    feeds reject negative values) and float rounding is monotonic, so a float sum of a
    suffix is at most the sum of the whole.

    >>> s0 = [[0.0, 1.0], [300.0, 2.0]]
    >>> b = window_bound(s0, 300.0, 3600.0, window_sum(s0, 300.0, 3600.0))
    >>> s1 = insert(s0, 600.0, 4.0, keep_s=400.0)        # drops [0, 1], appends [600, 4]
    >>> carry_bound(b, s1, 600.0, 3600.0), window_sum(s1, 600.0, 3600.0)
    (7.0, 6.0)
    >>> carry_bound(b, s0, 900.0, 3600.0)                # no new rain, the window moved on
    3.0
    >>> carry_bound(b, insert(s0, 100.0, 4.0, keep_s=900.0), 300.0, 3600.0) is None  # late
    True
    >>> carry_bound(b, [[0.0, 1.0], [300.0, 2.0]], 300.0, 3600.0) is None  # not that list
    True
    >>> top = window_bound(s0, 300.0, 600.0, window_max(s0, 300.0, 600.0))
    >>> carry_bound(top, s1, 600.0, 600.0, max), window_max(s1, 600.0, 600.0)
    (4.0, 4.0)
    """
    if previous is None or previous[4] != seconds or end < previous[3] or previous[2] is None:
        return None
    n_before, first_before, last_before, _, _, bound = previous
    n = len(series)
    if n == 0:
        return None
    last = series[-1]
    if last is last_before:  # no point appended: unchanged, unless a late one stayed
        if n == n_before and series[0] is first_before:
            return bound
        return None
    if n >= 2 and series[-2] is last_before and n <= n_before + 1:
        return combine(bound, last[1])
    return None


def window_max(series: Series, end: float, seconds: float) -> float | None:
    """Largest value with ``end - seconds <= t <= end`` (None if there is none).

    >>> window_max([[0.0, 5.0], [600.0, 9.0], [1200.0, 4.0]], 1200.0, 600.0)
    9.0
    >>> window_max([[0.0, 5.0]], 1200.0, 600.0) is None
    True
    """
    n = len(series)
    # the common case, a window that ends at the newest point (or after it): one bisection
    hi = n if n and series[-1][0] <= end else bisect.bisect_right(series, end, key=point_time)
    lo = bisect.bisect_left(series, end - seconds, 0, hi, key=point_time)
    return max(map(_VALUE, series[lo:hi])) if hi > lo else None


def rate_per_hour(series: Series, end: float, seconds: float) -> float | None:
    """Least-squares slope of the values over ``(end - seconds, end]``, per hour.

    None when fewer than two points fall in the window.

    >>> rate_per_hour([[0.0, 1.0], [1800.0, 1.5], [3600.0, 2.0]], 3600.0, 3600.0)
    1.0
    """
    lo = bisect.bisect_right(series, end - seconds, key=point_time)  # (end - seconds, end]
    hi = bisect.bisect_right(series, end, key=point_time)
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
