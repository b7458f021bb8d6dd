"""The broker killed (SIGKILL) mid-stream and started again on its storage, the worker left
running: it reconnects by itself, and the run ends exactly as if nothing had happened.

test_faults.py cuts the embedded broker off behind a TCP proxy, because the embedded Tansu
keeps its data in memory and a restart of *it* loses every topic. Here the broker is a Tansu
on S3 storage (a local S3 server, moto's: fault_kit.DurableBroker), so it can really crash
and come back with its topics, records, committed offsets and consumer groups, as a
restarted Kafka broker does. The phased scenario of ``fault_kit`` runs through one
`onemap worker` subprocess; the broker is killed twice (``CRASHES``), kept down for a while,
and started again on the same port and storage. Then:

- the ledger (``onemap.alerts``) holds every expected alert with exactly the expected
  content (a repeat, e.g. from a send retried after the crash, must be the same alert);
- the Redis dashboard state is exactly that of applying each alert once;
- every SMS is settled and none reached the loopback SMSC twice;
- the worker that saw the crashes is the one that finishes: same process, never restarted.

What recovers, and how (docs/operations.md): aiokafka, under faust, retries every fetch,
send and commit against the dead address (connection refused) every ~0.1 s, and carries on
once the broker listens again; the worker stays a member of its consumer group (Tansu keeps
the group in its storage), so no rebalance follows and it resumes from where it was. Were it
expelled, it would join again and consume from its committed offsets: the checks above hold
either way. The recovery times are printed (``-s``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from onemap.embedded import free_port, start_redis, stop
from onemap.records import Alert
from tests.integration.fault_kit import (
    NORMAL,
    DurableBroker,
    SmscThread,
    Worker,
    check_run,
    expected_phases,
    ledger,
    noise_records,
    prefix_for,
    produce_phase,
    run_phases,
    start_sms_worker,
    stopping,
    wait_for,
    wait_group_settled,
)
from tests.integration.kafka_helpers import produce_keyed

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Crash:
    """One broker crash of the run: in which phase, how long the broker stays dead, and how
    many readings are queued ahead of the phase's own records."""

    phase: int
    down_s: float
    backlog: int
    what: str


#: Two crashes. The first strikes while the worker works through a backlog (fetching,
#: producing between its stages, committing), with the phase's water readings queued behind
#: it, so that alerts of the phase are still to be made (asserted), and keeps the broker dead
#: longer than the worker's session timeout (6 s in tests). The second is a quick restart as
#: a phase's records arrive.
CRASHES = {
    3: Crash(3, 8.0, 2000, "while the worker worked through a backlog"),
    5: Crash(5, 2.0, 0, "as a phase's records arrived"),
}


@dataclasses.dataclass
class Rig:
    """The module's components: the durable broker, a Redis, the loopback SMSC."""

    broker: DurableBroker
    redis_url: str
    smsc: SmscThread
    tmp: Path

    def worker(self, prefix: str) -> Worker:
        return start_sms_worker(self.broker.url, self.redis_url, self.smsc, self.tmp,
                                prefix=prefix)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("broker-restart")
    redis_port = free_port()
    redis_proc = start_redis("127.0.0.1", redis_port, tmp / "redis", tmp / "redis.log")
    try:
        with DurableBroker(tmp) as broker, SmscThread() as smsc:
            yield Rig(broker, f"redis://127.0.0.1:{redis_port}/0", smsc, tmp)
    finally:
        stop([redis_proc])


@pytest.fixture(scope="module")
def phases() -> list[list[Alert]]:
    return expected_phases()


def test_broker_killed_mid_stream_and_restarted_worker_recovers_alone(
    rig: Rig, phases: list[list[Alert]],
) -> None:
    """Every alert once and right, every SMS once, from the one worker across two crashes
    of the broker (module docstring)."""
    prefix = prefix_for("bkr")
    client = redis.Redis.from_url(rig.redis_url)
    client.flushdb()
    before = rig.smsc.count()
    reports: list[str] = []
    with stopping([]) as workers:
        workers.append(rig.worker(prefix))
        wait_group_settled(workers)
        worker = workers[0]
        pid = worker.proc.pid

        def water_in() -> float:
            return worker.metric("onemap_records_in_total", feed="water")

        def strike(phase: int) -> None:
            crash = CRASHES.get(phase)
            if crash is None:
                return
            consumed = water_in()
            if crash.backlog:
                produce_keyed(rig.broker.bootstrap, f"{prefix}.in.water",
                              noise_records(phase, crash.backlog))
            produce_phase(rig.broker.bootstrap, prefix, phase)
            if crash.backlog:
                wait_for(lambda: water_in() > consumed, 30, "the worker to be into the backlog",
                         worker.alive)
            killed_at = datetime.now(UTC)
            rig.broker.kill()
            killed = time.monotonic()
            taken = water_in() - consumed  # the worker's metrics answer without the broker
            time.sleep(crash.down_s)
            # ... and down until the worker says so (its probe runs every health tick)
            wait_for(lambda: worker.metric("onemap_broker_up") == 0, 30,
                     "the worker to report the broker down (onemap_broker_up 0)", worker.alive)
            worker.alive()
            rig.broker.start()
            back = time.monotonic()
            want = {a.alert_id for a in phases[phase]}
            out = [r for r in ledger(rig.broker.bootstrap, f"{prefix}.alerts", want, 180)
                   if r["alert_id"] in want]
            recovered = time.monotonic() - back
            after = sum(1 for r in out if datetime.fromisoformat(r["issued_at"]) >= killed_at)
            if crash.backlog:
                # the crash struck mid-stream: some of the phase's alerts were made after it
                assert after, f"the phase's alerts were all out before the crash: {out}"
            reports.append(
                f"phase {phase}, broker killed {crash.what} ({taken:.0f} of "
                f"{crash.backlog + len(NORMAL)} readings taken in), down "
                f"{back - killed:.1f} s: the phase's alerts were out {recovered:.1f} s after "
                f"it was back ({after} of {len(out)} issued after the crash)")

        run_phases(rig.broker.bootstrap, prefix, phases, between=strike, timeout_s=180,
                   produce=lambda phase: phase not in CRASHES)
        check_run(rig.broker.bootstrap, prefix, client, rig.smsc, phases, workers=workers,
                  before=before)
        # the worker that saw the crashes finished the run: it reconnected by itself
        worker.alive()
        assert [w.proc.pid for w in workers] == [pid], "the worker was replaced"
        errors = worker.metric("onemap_broker_errors_total")
        wait_for(lambda: worker.metric("onemap_broker_up") == 1, 30,
                 "the worker to report the broker back (onemap_broker_up 1)", worker.alive)
    assert rig.broker.starts == 1 + len(CRASHES)
    assert len(reports) == len(CRASHES)
    print("\n".join(reports))
    print(f"onemap_broker_errors_total of the worker: {errors:.0f}")
