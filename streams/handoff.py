"""Observations handed from a worker's ingest loop to its own rules loop, by their bytes.

Every reading crosses two hops (feed -> ingest -> ``onemap.observations`` -> rules, as
DESIGN.md's topics have it), and the rules loop decoded each observation the ingest loop had
just encoded: a JSON parse, a place looked up, a second ``Observation`` per reading (~8 % of
a worker at capacity, benchmarks/README.md). The record still goes through the topic (it is
the contract, and the rules loop of another worker may own its partition); but when the
rules loop of the same worker consumes it, the ingest loop's ``Observation`` is taken
instead of decoding the bytes again.

The key is the record's value itself: ``Observation.from_json`` is a function of those bytes
alone, and ``from_json(o.to_json())`` equals ``o`` with the same types (checked on every
observation of the ingest fuzz, tests/fuzz/test_fuzz_ingest.py), so the object kept under
the bytes is what decoding them would give, whichever record carries them (the same reading
sent twice, a record of another worker's ingest with the same bytes). Nothing is shared but
a value, so nothing else needs to agree: offsets, acknowledgements, rebalances. A record the
rules loop never sees here (its partition is another worker's, or it was consumed before it
was kept) leaves its entry to be pushed out by newer ones: at most ``capacity`` are kept.
"""

from __future__ import annotations

from collections import deque

from onemap.records import Observation

#: entries kept (~1 KB each with the bytes): a worker's rules loop runs a batch or two behind
#: its ingest loop, not tens of thousands of records
CAPACITY = 20_000


class LocalObservations:
    """The observations this worker's ingest loop produced, until its rules loop takes them."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._kept: dict[bytes, Observation] = {}
        self._order: deque[bytes] = deque()
        #: records whose observation was taken, and those decoded (for tests and benchmarks)
        self.taken = 0
        self.missed = 0

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, value: bytes, observation: Observation) -> None:
        """Keep ``observation``, whose ``to_json()`` is ``value``, for the rules loop."""
        self._kept[value] = observation
        self._order.append(value)
        if len(self._order) > self.capacity:
            self._kept.pop(self._order.popleft(), None)

    def take(self, value: bytes) -> Observation | None:
        """The observation kept under ``value`` (and forget it), else None: decode it."""
        found = self._kept.pop(value, None)
        if found is None:
            self.missed += 1
        else:
            self.taken += 1
        return found
