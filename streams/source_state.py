"""How a source's rules state is laid out in its changelogged table: small to write.

The rules stage (``onemap.rules.evaluate``) works on one *logical* value per source: a dict
whose ``series`` hold up to 24 h of ``[t, value]`` readings (~1,200 pairs, ~17-30 KB of
JSON for a weather station). Writing that whole value to the changelog after every batch was
the largest cost of a worker (faust's JSON dumps alone 16-19 % of its time, plus the bytes on
the socket: benchmarks/results/pipeline-shallow-copies.md). Yet a batch changes only the
newest readings. So the table stores a source as

* a **head** under the source's key: everything but the series, plus each series' readings
  of the open (newest) chunk of event time, the ids of the sealed chunks, the first event
  time still in each series, and ``fresh``: the chunks this very write changed;
* **sealed chunks** under ``__series__:<chunk id>:<source key>``, one per ``CHUNK_S`` of event
  time, holding every series' readings of that hour. A chunk is written when the open chunk
  moves past it (once), again only when a late reading lands in it, and deleted (a
  tombstone) when every series has dropped it.

A batch therefore writes one head of ~1 KB per source it touched, plus a chunk now and then.

Crash safety. The head and its chunks are separate changelog records, so a worker killed
mid-write could leave some of them written. Writes of one source go to one changelog
partition in order, and a restart recovers a prefix of them; the head is written *first*
and carries the chunks it changed (``fresh``), the chunk records follow. Whatever prefix is
recovered, the newest recovered head with the chunk records before it (or its own ``fresh``)
gives exactly the state it was written from: a chunk record newer than the recovered head
can only come after it in the sequence, so it is not recovered.

Reading the previous layout: a head without ``sealed`` is the whole logical value (the layout
before this module); it is used as is and split on its next write.

Pure functions; the rules loop's shell (streams/rules_loop.py ``LoopSourceState``) does the I/O.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from onemap.rules.evaluate import CHANGED_IN_PLACE
from onemap.rules.windows import Series, point_time

log = logging.getLogger(__name__)

#: Event time per sealed chunk: the head holds at most one chunk of each series (12 readings
#: of a 5-minute station), and a chunk is written about once per hour of event time.
CHUNK_S = 3600.0
#: Table keys of sealed chunks start with this (not a source: skipped by silence checks).
CHUNK_PREFIX = "__series__:"
#: Keys of the head that belong to the layout, not to the logical value.
LAYOUT_KEYS = frozenset({"sealed", "open", "first", "fresh", "chunk_s"})

Chunk = dict[str, Series]


def chunk_key(source_key: str, chunk_id: int) -> str:
    """The table key of one sealed chunk of a source.

    >>> chunk_key("weather:ZH-AWS-028", 417000)
    '__series__:417000:weather:ZH-AWS-028'
    """
    return f"{CHUNK_PREFIX}{chunk_id}:{source_key}"


def is_chunk_key(key: str) -> bool:
    return key.startswith(CHUNK_PREFIX)


def chunk_of(t: float, chunk_s: float = CHUNK_S) -> int:
    return int(t // chunk_s)


@dataclasses.dataclass(frozen=True, slots=True)
class Split:
    """What to write for one source: the head, then chunk records (None: delete)."""

    head: dict[str, Any]
    chunks: dict[int, Chunk | None]


def _slice(series: Series, lo: float, hi: float) -> Series:
    return series[bisect.bisect_left(series, lo, key=point_time):
                  bisect.bisect_left(series, hi, key=point_time)]


def _detached(name: str, part: Any) -> Any:
    """A part of the logical value as the head keeps it. The rules change some parts in
    place (rules.evaluate.CHANGED_IN_PLACE): those are copied, a dict and the lists in it (a
    source's ``seen`` series), so that the rules changing the logical value after this write
    (streams/rules_loop.py keeps it) leave the stored head as written. The parts are small
    (levels, flags, the last hour's ``seen``): the series, the large part, go into the head
    as new slices anyway. The other parts the rules replace whole (``latest``, ``accum``):
    the head shares them.

    >>> seen = {"": [(1.0, 0.0)]}
    >>> kept = _detached("seen", seen)
    >>> seen[""].append((2.0, 0.0))
    >>> kept
    {'': [(1.0, 0.0)]}
    >>> latest = {"values": {"rain_mm": 1.0}}
    >>> _detached("latest", latest) is latest
    True
    """
    if type(part) is not dict or name not in CHANGED_IN_PLACE:
        return part  # a number, a time, None, or a part replaced whole
    return {k: (list(v) if type(v) is list else v) for k, v in part.items()}


#: the parts of the value besides its series that the rules change in place
_COPIED_PARTS = tuple(sorted(CHANGED_IN_PLACE - {"series"}))


def _body(value: dict[str, Any]) -> dict[str, Any]:
    """The logical value but its series (and any layout key), as the head keeps it:
    :func:`_detached` of each part, for the whole value at once (a head is written for
    every source at every commit: for a live source, once per reading).

    >>> value = {"newest": 1.0, "series": {"rain": []}, "seen": {"": [(1.0, 0.0)]},
    ...          "latest": {"values": {}}, "open": 3}
    >>> body = _body(value)
    >>> body == {"newest": 1.0, "seen": {"": [(1.0, 0.0)]}, "latest": {"values": {}}}
    True
    >>> body["seen"][""] is value["seen"][""], body["latest"] is value["latest"]
    (False, True)
    """
    body = dict(value)
    body.pop("series", None)
    if not LAYOUT_KEYS.isdisjoint(body):
        for name in LAYOUT_KEYS:
            body.pop(name, None)
    for name in _COPIED_PARTS:
        part = body.get(name)
        if type(part) is dict:
            # (inline, not _detached: the parts are a few small dicts, a call each cost
            # more than the copy)
            copy = body[name] = part.copy()
            for k, v in part.items():
                if type(v) is list:
                    copy[k] = list(v)
    return body


def _span(series: dict[str, Series]) -> tuple[dict[str, float], float | None, float | None]:
    """Each non-empty series' first time, and the oldest and the newest time of them all
    (None: every series is empty). One loop: a head is written for every source at every
    commit.

    >>> _span({"rain": [(0.0, 1.0), (300.0, 2.0)], "wind_mean": [], "level": [(60.0, 1.0)]})
    ({'rain': 0.0, 'level': 60.0}, 0.0, 300.0)
    """
    first: dict[str, float] = {}
    oldest = newest = None
    for name, s in series.items():
        if s:
            t_first, t_last = s[0][0], s[-1][0]
            first[name] = t_first
            if newest is None or t_last > newest:
                newest = t_last
            if oldest is None or t_first < oldest:
                oldest = t_first
    return first, oldest, newest


def _reseal(series: dict[str, Series], old_sealed: list[int], stale: list[int], *,
            k_low: int, k_from: int, k_open: int, chunk_s: float,
            ) -> tuple[list[int], dict[int, Chunk], dict[int, Chunk | None]]:
    """The sealed chunk ids after a write that may have changed the chunks from ``k_from``
    (those before ``k_open`` are written again), the chunks written, and the chunk records
    to write (None: delete; those before ``k_low`` are trimmed away, ``stale`` ones dropped)."""
    written: dict[int, Chunk] = {}
    kept = [k for k in old_sealed if k_low <= k < k_from]
    for k in range(k_from, k_open):
        lo, hi = k * chunk_s, (k + 1) * chunk_s
        content = {}
        for name, s in series.items():
            part = _slice(s, lo, hi)
            if part:
                content[name] = part
        if content:
            written[k] = content
    sealed = kept + sorted(written)
    live = set(sealed)
    chunks: dict[int, Chunk | None] = dict(written)
    for k in (*old_sealed, *stale):
        if k not in live:
            chunks[k] = None
    return sealed, written, chunks


def split(value: dict[str, Any], previous: Any, changed_from: float | None,
          chunk_s: float = CHUNK_S) -> Split:
    """The stored form of the logical ``value``, given the head stored so far (``previous``:
    a head of this layout, a value of the old layout, or empty) and the oldest event time
    this batch may have changed (None: unknown, rewrite every chunk).

    >>> value = {"newest": 7500.0, "series": {"rain": [[0.0, 1.0], [3600.0, 2.0],
    ...                                                [7500.0, 3.0]]}}
    >>> s = split(value, {}, None)
    >>> s.head["series"], s.head["sealed"], sorted(s.chunks)
    ({'rain': [[7500.0, 3.0]]}, [0, 1], [0, 1])
    >>> later = {"newest": 7800.0, "series": {"rain": [[3600.0, 2.0], [7500.0, 3.0],
    ...                                                [7800.0, 4.0]]}}
    >>> s2 = split(later, s.head, 7800.0)      # chunk 0 trimmed away, nothing else sealed
    >>> s2.head["series"], s2.head["sealed"], s2.chunks
    ({'rain': [[7500.0, 3.0], [7800.0, 4.0]]}, [1], {0: None})
    """
    series: dict[str, Series] = value.get("series") or {}
    old_head = previous if isinstance(previous, dict) else {}
    same_layout = "sealed" in old_head and old_head.get("chunk_s") == chunk_s
    old_sealed: list[int] = list(old_head.get("sealed", ())) if same_layout else []
    # ids of an earlier chunk size cannot be reused: delete them all
    stale: list[int] = [] if same_layout else [int(k) for k in old_head.get("sealed", ())]
    first, oldest, newest = _span(series)
    if newest is None and not old_sealed and not stale:
        # nothing to split (an incident, a CAP warning): the value as it is now
        return Split({k: _detached(k, v) for k, v in value.items()}, {})
    body = _body(value)
    if newest is None or oldest is None:
        return Split({**body, "series": {n: [] for n in series}, "sealed": [], "open": None,
                      "first": {}, "fresh": [], "chunk_s": chunk_s},
                     dict.fromkeys([*old_sealed, *stale]))
    # (chunk_of is monotonic: the chunk of the latest time is the latest chunk)
    k_open = chunk_of(newest, chunk_s)
    k_low = chunk_of(oldest, chunk_s)
    old_open = old_head.get("open")
    if same_layout and changed_from is not None and old_open is not None:
        k_from = max(k_low, min(chunk_of(changed_from, chunk_s), int(old_open)))
    else:
        k_from = k_low
    written: dict[int, Chunk] = {}
    chunks: dict[int, Chunk | None] = {}
    if k_from == k_open and not stale and (not old_sealed or (
            k_low <= old_sealed[0] and old_sealed[-1] < k_from)):
        # the common write (a live source, an hour not yet over): nothing to seal, no
        # chunk trimmed away, the sealed ones stay as they are (the general case below
        # gives the same; ``sealed`` is kept in ascending order)
        sealed = old_sealed
    else:
        sealed, written, chunks = _reseal(series, old_sealed, stale, k_low=k_low,
                                          k_from=k_from, k_open=k_open, chunk_s=chunk_s)
    open_lo = k_open * chunk_s
    tails: dict[str, Series] = {}
    for name, s in series.items():
        tails[name] = s[bisect.bisect_left(s, open_lo, key=point_time):]
    body["series"] = tails
    body["sealed"] = sealed
    body["open"] = k_open
    body["first"] = first
    body["fresh"] = [[k, c] for k, c in written.items()] if written else []
    body["chunk_s"] = chunk_s
    return Split(body, chunks)


def assemble(head: Any, read_chunk: Callable[[int], Any], source_key: str = "") -> Any:
    """The logical value of a stored head: its series rebuilt from its chunks.

    ``read_chunk(id)`` returns a stored chunk (or something falsy if it is missing). A head
    of the old layout (no ``sealed``) is returned as is.

    >>> value = {"newest": 7500.0, "series": {"rain": [[0.0, 1.0], [3600.0, 2.0],
    ...                                                [7500.0, 3.0]]}}
    >>> s = split(value, {}, None)
    >>> assemble(s.head, s.chunks.get) == value
    True
    """
    if not isinstance(head, dict) or "sealed" not in head:
        return head
    fresh = {int(k): c for k, c in head.get("fresh", ())}
    parts: dict[str, Series] = {name: [] for name in head["series"]}
    for k in head["sealed"]:
        content = fresh.get(k) or read_chunk(k)
        if not content:
            # cannot happen with the write order above; losing readings silently would
            # make windows undercount, so say so loudly (and carry on: a stuck worker
            # would hold up every other source)
            log.error("source state %s: chunk %s is missing; its readings are lost",
                      source_key, k)
            continue
        for name, points in content.items():
            parts.setdefault(name, []).extend(points)
    first: dict[str, float] = head.get("first", {})
    series: dict[str, Series] = {}
    for name, tail in head["series"].items():
        points = parts.get(name, [])
        points.extend(tail)
        since = first.get(name)
        if since is not None and points and points[0][0] < since:
            points = points[bisect.bisect_left(points, since, key=point_time):]
        series[name] = points
    logical = {k: v for k, v in head.items() if k not in LAYOUT_KEYS}
    logical["series"] = series
    return logical
