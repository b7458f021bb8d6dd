"""Stage 2 on a plain aiokafka batch loop: observations -> hazards, with the sources' state.

Like ingest (streams/batch_loop.py), the rules stage sees every reading, so it runs off
faust's per-event stream, in a consumer group of its own (``<app id>-rules``) on both
observations topics (the priority lane's records first). Its per-source state (windows,
levels, hysteresis: up to 24 h of readings per source) is what faust's table kept before;
here :class:`SourceStateStore` keeps it for the partitions this worker owns and writes it to
the same changelog topic, in the same format (JSON keys and values, one changelog partition
per observations partition number), so an upgraded deployment keeps its windows.

A batch: restore any partition not restored yet; decode; ``RulesStage.process`` over the
state; hazards and dead letters queued. The state's writes are held (reads see them) until
the loop's next commit (``commit_interval_s``): then every turn's hazards are delivered
first, *then* the state's changed records (one ``Outbox`` batch per changelog partition),
then the offsets. A worker that dies before the state is written consumes those turns'
records again and re-issues their hazards under the same ids (the lifecycle stage and the
sinks are idempotent on them); the other order would lose them. Holding the writes across
turns writes a source's head once per interval instead of once per turn.

Restoring reads the changelog partitions from the start to their end (as the ledger is read
back: until every fetch has answered up to the end, since the embedded broker's end offsets
read low). The range assignor gives a worker the same partition number of both observations
topics, and a rebalance keeps the state of the partitions a worker keeps.

Sources that stopped reporting are checked between batches, every ``SILENCE_CHECK_S`` (not
while a commit writes the state: its first turn after), on the state as the turns left it
(held writes included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from onemap.records import Hazard, Observation
from onemap.rules.evaluate import Copies, state_key
from onemap.rules.lifecycle import rank_area
from onemap.rules.rulebook import RuleBook
from onemap.streams.batch_loop import Batch, BatchLoop, StateWrite, slices
from onemap.streams.context import WorkerContext
from onemap.streams.deadletter import DeadLetter, RawRecord, undecodable
from onemap.streams.handoff import LocalObservations
from onemap.streams.ledger_tail import read_to_end
from onemap.streams.outbox import Outbox
from onemap.streams.source_state import Chunk, assemble, chunk_key, is_chunk_key, split
from onemap.streams.state_tables import DELETED, MARKER_PREFIX, HeldWrites

log = logging.getLogger(__name__)

SILENCE_CHECK_S = 5.0
#: sources judged between two yields to the worker's other tasks (RulesLoop.silent_sources)
SILENCE_SLICE = 1_000


def changelog_topic(app_id: str) -> str:
    """The per-source state's changelog: the name faust gave its table's, kept."""
    return f"{app_id}-onemap-source-state-changelog"


class SourceStateStore:
    """The rules' per-source state of the partitions this worker owns (table records in the
    layout of streams/source_state.py), and the changelog that keeps it.

    Every record is kept as its changelog bytes, as written or restored: the logical values
    the rules work on are assembled from them once and kept beside (``LoopSourceState``'s
    cache), so the store is read only to assemble a source (after a restore or a rebalance)
    and by the silence check. As objects, a source's head and a day of sealed chunks (~23
    hourly chunks of 3-4 series) were ~100 containers that every full collection of the
    cyclic garbage collector visited (~0.9 s per collection for a network of 10,000
    sources), and each commit made a head's ~10 anew, which set off the next full
    collection sooner (benchmarks/bench_state_gc.py). Bytes are not tracked."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        #: table key -> its changelog value
        self.data: dict[str, bytes] = {}
        self.partition_of: dict[str, int] = {}
        self.restored: set[int] = set()

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, decoded."""
        raw = self.data.get(key)
        return default if raw is None else orjson.loads(raw)

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every record, decoded."""
        return ((key, orjson.loads(raw)) for key, raw in self.data.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def chunk(self, key: str) -> Chunk | None:
        """A sealed chunk's content (None: not stored), its points as tuples (as the rules
        make them: the collector stops tracking a tuple of floats)."""
        raw = self.data.get(key)
        if raw is None:
            return None
        return {name: [tuple(p) for p in points] for name, points in orjson.loads(raw).items()}

    def write(self, partition: int, key: str, raw: Any, out: Outbox) -> None:
        """Store one record (``raw``: its encoded value, or DELETED) and add it to ``out``."""
        encoded = orjson.dumps(key)
        if raw is DELETED:
            self.data.pop(key, None)
            self.partition_of.pop(key, None)
            out.add(self.topic, encoded, None, partition)
        else:
            self.data[key] = raw
            self.partition_of[key] = partition
            out.add(self.topic, encoded, raw, partition)

    def apply(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """One changelog record, as restored."""
        if key is None:
            return
        name = orjson.loads(key)
        if not isinstance(name, str) or name.startswith(MARKER_PREFIX):
            return  # faust's markers (streams/state_tables.py): not state
        if value is None:
            self.data.pop(name, None)
            self.partition_of.pop(name, None)
        else:
            self.data[name] = value
            self.partition_of[name] = partition

    def keep_only(self, partitions: set[int]) -> None:
        """Forget the state of every partition not in ``partitions``."""
        for key, partition in list(self.partition_of.items()):
            if partition not in partitions:
                del self.data[key], self.partition_of[key]
        self.restored &= partitions

    async def restore(self, bootstrap_servers: list[str], partitions: set[int]) -> None:
        """Read the changelog partitions from their start to their end."""
        todo = sorted(partitions - self.restored)
        if not todo:
            return
        started = time.monotonic()
        tps = [TopicPartition(self.topic, p) for p in todo]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=100)
        count = 0

        def apply(tp: TopicPartition, record: Any) -> None:
            nonlocal count
            count += 1
            self.apply(tp.partition, record.key, record.value)

        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            await read_to_end(consumer, tps, apply, {})
        finally:
            await consumer.stop()
        self.restored.update(todo)
        log.info("rules state restored: partitions %s, %d changelog records in %.1f s",
                 todo, count, time.monotonic() - started)


#: no value (a key's value may be None)
_NONE = object()

#: what a write needs of the head it replaces (source_state.split): its sealed chunk ids,
#: open chunk and chunk size (ints and floats in tuples: the collector stops tracking them);
#: None: not a head of the chunked layout
Layout = tuple[tuple[int, ...], Any, Any] | None
#: table key -> (the head's bytes as stored, the logical value assembled from them, the
#: head's layout)
Cache = dict[str, tuple[bytes, Any, Layout]]


def _layout(head: Any) -> Layout:
    if not isinstance(head, dict) or "sealed" not in head:
        return None
    return tuple(head["sealed"]), head.get("open"), head.get("chunk_s")


def _previous(layout: Layout) -> dict[str, Any]:
    """A head with ``layout``, as split reads the head it replaces."""
    if layout is None:
        return {}
    sealed, open_chunk, chunk_s = layout
    return {"sealed": sealed, "open": open_chunk, "chunk_s": chunk_s}


@dataclasses.dataclass(slots=True)
class Sealing:
    """What a commit writes of the rules' state: per source, its partition and its store
    records (table key, encoded value or DELETED) in write order (streams/source_state.py:
    the head before its chunks), the first ``written`` of them written already; and the
    sources whose records are not made yet (their partition and the oldest event time
    changed since the last seal)."""

    records: list[tuple[int, list[tuple[str, Any]]]]
    unmade: dict[str, tuple[int, float | None]]
    written: int = 0


class LoopSourceState(HeldWrites):
    """The rules' per-source state as the turns since the last commit see it, over
    :class:`SourceStateStore`.

    The rules read and write one logical value per source (up to 24 h of readings); the
    store holds it as a small head plus hourly chunks (streams/source_state.py), so that a
    batch writes only what changed. Reads assemble the logical value once and keep it
    (``cache``, owned by the loop across batches) for as long as the store still holds the
    same head (the same bytes object): a restore or another write replaces it.

    Writes are held (reads see them) until :meth:`seal_into`, which the loop calls after the
    turns' output is flushed: if the worker dies before, the turns' records are consumed
    again and their hazards re-issued under the same ids; were the state written first, the
    second run would find them already applied and their hazards would be lost. A source's
    records go to the changelog partition of its observations' partition
    (``partition_of_key``), so state recovers with the records that change it.
    """

    def __init__(self, store: SourceStateStore, cache: Cache) -> None:
        super().__init__()
        self.store = store
        #: the partition of each source's newest bound record (:meth:`bind`)
        self.partition_of_key: dict[str, int] = {}
        #: the oldest event time each source's readings since the last seal may have changed
        self.changed_from: dict[str, float] = {}
        self.cache = cache
        #: the writes a commit under way took (:meth:`begin_seal`), until it writes them
        self.sealing: dict[str, Any] = {}
        self._flight: Sealing | None = None
        #: the sources' values the rules stage copied and changes in place (its Copies):
        #: copied once, at a source's first reading after it was assembled from the store,
        #: and kept across seals (a sealed head never shares a part that changes:
        #: source_state._detached), so a day of readings is not copied again at every
        #: commit. The cache then holds values changed since the last seal:
        #: :meth:`forget_unsealed` takes them out when a rebalance drops what was held.
        self.copies = Copies()

    def bind(self, observations: Iterable[tuple[Observation, Any]]) -> None:
        """A turn's (observation, record) pairs: their sources may be written, to their
        records' partitions; each source's oldest reading bounds what changed."""
        partition_of_key, changed_from = self.partition_of_key, self.changed_from
        for o, r in observations:
            key, t = state_key(o), o.event_seconds()
            partition_of_key[key] = r.partition
            if t < changed_from.get(key, t + 1.0):
                changed_from[key] = t

    def _bound(self, key: str) -> bool:
        return key in self.partition_of_key

    def _cached(self, key: str, raw: bytes) -> tuple[bytes, Any, Layout] | None:
        """The cache's entry of ``key`` if it was made from the head ``raw`` the store holds
        (the same bytes object), else None."""
        cached = self.cache.get(key)
        return cached if cached is not None and cached[0] is raw else None

    def _stored(self, key: str, default: Any) -> Any:
        """The logical value of ``key``: as a commit under way took it (not written yet),
        else in the store, assembled once per head."""
        sealing = self.sealing.get(key, _NONE)
        if sealing is not _NONE:
            flight = self._flight
            if flight is not None and key in flight.unmade:
                # its records made before a turn changes the value (copy on write)
                self._make(flight, key)
            return default if sealing is DELETED else sealing
        raw = self.store.data.get(key)
        if raw is None:
            return default
        cached = self._cached(key, raw)
        if cached is not None:
            return cached[1]
        head = orjson.loads(raw)
        value = assemble(head, lambda k: self.store.chunk(chunk_key(key, k)), key)
        self.cache[key] = (raw, value, _layout(head))
        return value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, DELETED)
        if value is DELETED:
            raise KeyError(key)
        return value

    def _stored_form(self, key: str, value: Any, changed_from: float | None,
                     ) -> list[tuple[str, Any]]:
        """The store records one logical write becomes, encoded, in write order: the head
        first (see streams/source_state.py on crash safety), then its chunks. The cache
        maps the new head's bytes to ``value`` (a turn changes it in place afterwards, and
        then holds it for the next commit)."""
        raw = self.store.data.get(key)
        layout: Layout = None
        if raw is not None:
            cached = self._cached(key, raw)
            layout = cached[2] if cached is not None else _layout(orjson.loads(raw))
        if value is DELETED:
            self.cache.pop(key, None)
            sealed = layout[0] if layout is not None else ()
            return [(key, DELETED), *((chunk_key(key, k), DELETED) for k in sealed)]
        if not isinstance(value, dict):
            encoded = orjson.dumps(value)
            self.cache[key] = (encoded, value, None)
            return [(key, encoded)]
        stored = split(value, _previous(layout), changed_from)
        encoded = orjson.dumps(stored.head)
        self.cache[key] = (encoded, value, _layout(stored.head))
        return [(key, encoded), *((chunk_key(key, k), DELETED if c is None else orjson.dumps(c))
                                  for k, c in stored.chunks.items())]

    def begin_seal(self) -> Sealing:
        """Take the writes held since the last seal for a commit; until :meth:`finish_seal`,
        reads see them (:attr:`sealing`). Their store records (a source's head split off
        its value and its chunks) are made and written as the commit goes on
        (:meth:`write_some`), and a source's are made at once when a turn reads it to
        change it (the turns change the values in place): so the records hold the values
        as they were taken, and taking and writing them does not stop the turns for as
        long as splitting, encoding and writing every source's head takes (a network of
        sources: thousands of heads a commit)."""
        if self.sealing:
            raise RuntimeError("a seal began before the previous one was written")
        partition_of_key, changed_from = self.partition_of_key, self.changed_from
        for key, value in self.pending.items():
            if isinstance(value, dict):
                value["partition"] = partition_of_key[key]  # for per-partition stream time
        flight = Sealing([], {key: (partition_of_key[key], changed_from.get(key))
                              for key in self.pending})
        self.sealing, self.pending = self.pending, {}
        self.partition_of_key = {}
        self.changed_from = {}
        self._flight = flight
        return flight

    def _make(self, flight: Sealing, key: str) -> None:
        partition, changed_from = flight.unmade.pop(key)
        flight.records.append(
            (partition, self._stored_form(key, self.sealing[key], changed_from)))

    def write_some(self, flight: Sealing, count: int, out: Outbox) -> bool:
        """Make the records of up to ``count`` more sources of ``flight``, and write every
        source's made so far into the store and ``out`` (the changelog's records); whether
        all are written. A source's records are written together: the store never holds a
        head without the chunks it names, whenever the writing stops."""
        for key in list(itertools.islice(flight.unmade, count)):
            self._make(flight, key)
        write, records = self.store.write, flight.records
        for partition, stored in records[flight.written:]:
            for table_key, value in stored:
                write(partition, table_key, value, out)
        flight.written = len(records)
        return not flight.unmade

    def finish_seal(self, flight: Sealing, out: Outbox) -> None:
        """Write what is left of what :meth:`begin_seal` took (:meth:`write_some`); from
        here reads find it in the store."""
        self.write_some(flight, len(flight.unmade), out)
        # (the cache already maps each new head to its value: _stored_form)
        self.sealing = {}
        self._flight = None

    def seal_into(self, out: Outbox) -> None:
        """Put the held writes in the store and ``out`` at once (:meth:`begin_seal`, then
        :meth:`finish_seal`)."""
        self.finish_seal(self.begin_seal(), out)

    def forget_unsealed(self) -> None:
        """What was held is dropped (a rebalance; the loop goes on with a new state): the
        cached values of the sources changed since the last seal written (changed in place,
        :attr:`copies`; also those a commit under way took and has not written: it will
        not write them) are forgotten, so that the next read assembles each from the store
        as it was written."""
        for key in (*self.partition_of_key, *self.sealing):
            self.cache.pop(key, None)

    def sources(self) -> list[tuple[str, Any]]:
        """Each source's value as the turns since the last commit left it: the held writes
        (and those of a commit under way) over the store's heads (chunks and markers left
        out), each with its partition."""
        pending, sealing = self.pending, self.sealing
        out: list[tuple[str, Any]] = []
        for k, raw in self.store.data.items():
            if k in pending or k in sealing or k.startswith(MARKER_PREFIX) or is_chunk_key(k):
                continue
            cached = self._cached(k, raw)  # the value assembled from this head, else the head
            out.append((k, cached[1] if cached is not None else orjson.loads(raw)))
        # (a value a commit took has its partition: begin_seal set it)
        out.extend((k, v) for k, v in sealing.items()
                   if k not in pending and isinstance(v, dict))
        out.extend((k, {**v, "partition": self.partition_of_key[k]})
                   for k, v in pending.items() if isinstance(v, dict))
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)


class _SourceStateWrite:
    """A commit's write of the rules' state (BatchLoop.seal)."""

    #: sources whose records are made and written between two yields to the worker's
    #: other tasks
    SLICE = 200

    def __init__(self, state: LoopSourceState, flight: Sealing) -> None:
        self.state = state
        self.flight = flight
        self.clock: Callable[[], float] = time.perf_counter

    async def write(self, out: Outbox, current: Callable[[], bool], share: float = 1.0) -> bool:
        """In slices of :attr:`SLICE` sources; after a slice that took t, waits
        t × (1 / ``share`` - 1) (BatchLoop's COMMIT_SHARE beside the turns)."""
        pause = 1 / share - 1
        while True:
            started = self.clock()
            if self.state.write_some(self.flight, self.SLICE, out):
                break
            await asyncio.sleep((self.clock() - started) * pause)
            if not current():
                # revoked: stop writing to the store (the partitions given away are
                # forgotten, and a write now would bring some of their sources back);
                # what is written goes out, the rest is dropped with the held writes
                return False
        self.state.finish_seal(self.flight, out)
        return True


class RulesLoop(BatchLoop):
    """The rules stage; ``run`` is a task of the faust app."""

    name = "rules"

    def __init__(self, ctx: WorkerContext, *, observations: str, priority: str,
                 hazards: str, deadletter: str, local: LocalObservations | None = None) -> None:
        """``local``: the observations this worker's ingest loop made, taken instead of
        decoding their records (streams/handoff.py)."""
        super().__init__(ctx, [observations, priority], [priority])
        self.local = local if local is not None else LocalObservations(capacity=0)
        self.hazards_topic = hazards
        self.deadletter_topic = deadletter
        self.store = SourceStateStore(changelog_topic(ctx.settings.app_id))
        #: the logical per-source values assembled from the store (LoopSourceState)
        self.cache: Cache = {}
        #: the state as the turns since the last commit left it (writes held until then)
        self.state = self._new_state()
        self._silence_checked = time.monotonic()

    def _new_state(self) -> LoopSourceState:
        return LoopSourceState(self.store, self.cache)

    def seal(self) -> StateWrite | None:
        return _SourceStateWrite(self.state, self.state.begin_seal())

    def drop(self) -> None:
        self.state.forget_unsealed()
        self.state = self._new_state()

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        self.store.keep_only(numbers)
        data = self.store.data  # the values of the sources given away go with their heads
        for key in [k for k in self.cache if k not in data]:
            del self.cache[key]
        await self.store.restore(self.ctx.settings.bootstrap_servers, numbers)

    async def idle(self, producer: AIOKafkaProducer) -> None:
        if time.monotonic() - self._silence_checked < SILENCE_CHECK_S or self.committing:
            return  # (not while a commit writes: the two every 5 s, at once, added up)
        self._silence_checked = time.monotonic()
        hazards = await self.silent_sources()
        if not hazards:
            return
        out = self.outbox(producer)
        for hazard in hazards:
            self.m.rule_decisions.labels("source-silent").inc()
            out.add(self.hazards_topic, rank_area(hazard.place).encode(), hazard.to_json())
        await out.send()
        await producer.flush()

    async def silent_sources(self) -> list[Hazard]:
        """"Sensor silent" hazards for the sources that stopped reporting, judged on the state
        the turns since the last commit left (:meth:`LoopSourceState.sources`): a reading
        processed but not committed yet counts. (Judged on the committed store, a source
        whose newer reading was already processed was reported silent after its older
        one, and that reading, applied already, could no longer end the silence.)

        In slices of ``SILENCE_SLICE`` sources, the worker's other tasks run between them
        (over a network of 10,000 sources the check at once stopped them for 50-220 ms
        every 5 s); no turn of this loop runs meanwhile, so the state stays as judged."""
        rules, book = self.ctx.rules, self.ctx.rulebook.current
        entries = self.state.sources()
        watermarks = rules.watermarks(entries)
        hazards: list[Hazard] = []
        for i, part in enumerate(slices(entries, SILENCE_SLICE)):
            if i:
                await asyncio.sleep(0)
            hazards.extend(rules.silent_sources(part, book, watermarks))
        return hazards

    async def process(self, batch: Batch, out: Outbox, producer: AIOKafkaProducer) -> int:
        await self.store.restore(self.ctx.settings.bootstrap_servers,
                                 {tp.partition for tp in batch})
        if not self.current():
            return 0  # revoked while restoring: these records come again
        now = self.ctx.now()
        decoded: list[tuple[Observation, Any]] = []
        take = self.local.take
        for records in batch.values():
            for r in records:
                value = r.value
                kept = take(value) if value is not None else None
                if kept is not None:
                    decoded.append((kept, r))
                    continue
                try:
                    decoded.append((Observation.from_json(value), r))
                except (ValueError, KeyError, TypeError) as exc:
                    dl = undecodable(RawRecord.of(r), "rules", exc)
                    self.m.dead_letters.labels("internal", "undecodable").inc()
                    out.add(self.deadletter_topic, r.key, dl.to_json(now))
        # in event-time order (as RulesStage.process orders a batch: floats, ties in arrival
        # order), so that the slices are processed in the order of the whole batch
        decoded.sort(key=lambda pair: pair[0].event_seconds())
        state = self.state
        state.bind(decoded)
        book = self.ctx.rulebook.current
        produced = 0
        for i, part in enumerate(slices(decoded, self.slice_records)):
            if i and not await self.pause():
                break  # revoked: the state is dropped, the records come again
            produced += self._process_slice(part, state, book, out, now)
        # the state waits for the next commit, after the output (module docstring)
        return produced

    def _process_slice(self, decoded: Sequence[tuple[Observation, Any]],
                       state: LoopSourceState, book: RuleBook, out: Outbox,
                       now: datetime) -> int:
        result = self.ctx.rules.process([o for o, _ in decoded], state, book, state.copies)
        # the exact record of each rejected observation, for its bytes (refusals are rare)
        record_of = {id(o): r for o, r in decoded} if result.rejected else {}
        for rejected in result.rejected:
            r = record_of[id(rejected.observation)]
            self.m.dead_letters.labels(rejected.observation.feed, rejected.reason).inc()
            dl = DeadLetter(RawRecord.of(r), rejected.observation.feed, "rules", rejected.reason,
                            rejected.detail)
            out.add(self.deadletter_topic, r.key, dl.to_json(now))
        for decision, count in result.decisions.items():
            if count:
                self.m.rule_decisions.labels(decision.value).inc(count)
        for hazard in result.hazards:
            out.add(self.hazards_topic, rank_area(hazard.place).encode(), hazard.to_json())
        return len(result.hazards)
