"""Scale-out: two `onemap worker` processes in one consumer group (4 partitions) issue
exactly the alerts one worker issues on its own, and the pure stages in process too: the
same ids, levels, transitions, scores and notification decisions, on the real broker.

Why this holds (docs/operations.md): observations are keyed by source, so a source's
window and level live in one partition of ``onemap-source-state``, whichever worker owns it;
hazards are keyed by district, the widest area whose hazards score and inhibit each other,
so one worker sees all of a district's hazards, in order.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from onemap.records import Alert
from tests.conftest import Broker
from tests.integration.fault_kit import (
    Worker,
    check_sms,
    compare_ledger,
    dashboard,
    expected_by_id,
    expected_dashboard,
    expected_phases,
    expected_sms_keys,
    first_issue,
    prefix_for,
    run_phases,
    sms_settled,
    start_worker,
    stopping,
    wait_dashboard,
    wait_for,
    wait_group_settled,
    worker_env,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def phases() -> list[list[Alert]]:
    return expected_phases()


def redis_db(redis_url: str, db: int) -> str:
    return f"{redis_url.rsplit('/', 1)[0]}/{db}"


def run_group(size: int, broker: Broker, redis_url: str, tmp: Path,
              phases: list[list[Alert]]) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                    list[float]]:
    """The scenario through ``size`` workers of one group: (ledger, dashboard state, records
    each worker's rules stage consumed)."""
    prefix = prefix_for(f"so{size}")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    expected = expected_by_id(phases)
    sms_keys = expected_sms_keys(first_issue(
        [json.loads(a.to_json()) for p in phases for a in p]))
    with stopping([]) as workers:
        for n in range(size):
            data = tmp / f"{prefix}-{n}"
            data.mkdir()
            workers.append(start_worker(worker_env(broker, redis_url, data, prefix),
                                        data / "worker.log"))
        wait_group_settled(workers)
        records = run_phases(broker.bootstrap, prefix, phases)
        want = expected_dashboard(expected)
        wait_dashboard(client, want, 60, alive=lambda: _alive(workers))
        share = [w.metric("onemap_records_in_total", feed="water") for w in workers]
        state = dashboard(client)
        wait_for(lambda: sms_settled(client, sms_keys), 30, "the SMS",
                 alive=lambda: _alive(workers))
        check_sms(client, sms_keys, sms_outbox(tmp, prefix))
    client.close()
    return records, state, share


def sms_outbox(tmp: Path, prefix: str) -> Counter[tuple[str, str]]:
    """(phone, text) of every message in the file outboxes of a group's workers."""
    out: Counter[tuple[str, str]] = Counter()
    for path in tmp.glob(f"{prefix}-*/sms-outbox.jsonl"):
        for line in path.read_text().splitlines():
            m = json.loads(line)
            out[(m["phone"].removeprefix("+"), m["text"])] += 1
    return out


def _alive(workers: list[Worker]) -> None:
    for w in workers:
        w.alive()


def test_two_workers_issue_exactly_the_alerts_of_one(
    broker: Broker, redis_url: str, tmp_path: Path, phases: list[list[Alert]],
) -> None:
    expected = expected_by_id(phases)
    assert len(expected) >= 15 and {a["transition"] for a in expected.values()} >= {
        "new", "escalated", "de-escalated", "resolved"}
    assert any(a["notify"] == "inhibited" for a in expected.values())

    one, one_state, _ = run_group(1, broker, redis_db(redis_url, 11), tmp_path, phases)
    two, two_state, share = run_group(2, broker, redis_db(redis_url, 12), tmp_path, phases)

    compare_ledger(one, expected)  # one worker = the pure stages in process
    compare_ledger(two, expected)  # two workers = the same, id for id, field for field
    assert one_state == two_state == expected_dashboard(expected)
    assert all(n > 0 for n in share), f"a worker of the pair got no input partition: {share}"
