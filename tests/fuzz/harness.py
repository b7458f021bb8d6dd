"""The fuzz harness: how many inputs, how they are batched, and the hang guard.

Why batches from a seed: drawing each input through hypothesis strategies cost 1-4 ms per input
and, batched as lists, repeated most inputs across examples (hypothesis mutates its earlier
examples: 2,000 drawn, 344 distinct). So hypothesis draws one seed per example (reproducible,
derandomized in CI, shrunk and reported on failure) and a fast structure-aware generator
(``gen(random.Random(seed))``) makes a batch of inputs from it. The harness counts the
distinct inputs actually checked and the test asserts the count, so "10,000 inputs" is a
measured fact, not a setting. The failing input itself is named in the assertion message.

Why a budget instead of a deadline: a timing assertion would fail on a slow or busy CI machine.
The budget is a hang guard (``SIGALRM``): per input and for the whole run, both generous,
and when one fires the test fails loudly naming the input that was running. It does not bound
C code that never returns to the interpreter; pytest-timeout (300 s) remains the backstop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: Inputs per parser per run; raise it for a deeper run: ONEMAP_FUZZ_EXAMPLES=100000.
TARGET = int(os.environ.get("ONEMAP_FUZZ_EXAMPLES", "10000"))
#: CI runs are reproducible (the same inputs every run); ONEMAP_FUZZ_DERANDOMIZE=0 explores
#: new inputs each run (hypothesis then prints the seed to reproduce a failure).
DERANDOMIZE = os.environ.get("ONEMAP_FUZZ_DERANDOMIZE", "1") != "0"
#: Per-input hang guard: no single parse may take this long (the slowest legitimate input, a
#: 1 MiB CAP message, validates in about 2.5 s on a busy machine).
PER_INPUT_S = float(os.environ.get("ONEMAP_FUZZ_INPUT_BUDGET_S", "20"))
#: Whole-run hang guard, per parser: generous against CI noise, small against a real hang.
RUN_S_PER_INPUT = 0.03
RUN_S_MIN = 120.0
#: Generate this much more than TARGET so a few duplicate inputs never drop the count below it.
HEADROOM = 1.2


class BudgetExceeded(BaseException):
    """Raised from SIGALRM. A BaseException, so neither a parser's ``except Exception`` nor
    hypothesis (which would try to shrink it) can swallow the hang."""


@dataclasses.dataclass
class FuzzStats:
    """What one fuzz run checked: inputs and distinct inputs, and outcomes by name."""

    inputs: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    _seen: set[bytes] = dataclasses.field(default_factory=set, repr=False)

    @property
    def distinct(self) -> int:
        return len(self._seen)

    def add(self, item: object, outcome: str | list[tuple[object, str]]) -> None:
        """One input and its outcome, or (for a batch input) each of its inputs and theirs."""
        for one, result in ([(item, outcome)] if isinstance(outcome, str) else outcome):
            self.inputs += 1
            self._seen.add(hashlib.blake2b(repr(one).encode("utf-8", "surrogatepass"),
                                           digest_size=16).digest())
            self.outcomes[result] = self.outcomes.get(result, 0) + 1

    def summary(self, name: str, seconds: float) -> str:
        top = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items(),
                                                      key=lambda kv: -kv[1]))
        return (f"fuzz {name}: {self.inputs} inputs ({self.distinct} distinct) in "
                f"{seconds:.1f} s; outcomes: {top}")


class Budget:
    """SIGALRM-based hang guard for the whole run and for each input.

    pytest-timeout also uses SIGALRM; its handler and remaining time are restored on exit.
    """

    def __init__(self, name: str, run_s: float, per_input_s: float = PER_INPUT_S) -> None:
        self.name = name
        self.run_s = run_s
        self.per_input_s = per_input_s
        self.current: object = None
        self._run_deadline = 0.0
        self._why = ""

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        shown = repr(self.current)
        if len(shown) > 300:
            shown = f"{shown[:300]}... ({len(shown)} chars)"
        raise BudgetExceeded(f"fuzz {self.name}: {self._why}; the input running was {shown}")

    def _arm(self, seconds: float, why: str) -> None:
        self._why = why
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    @contextmanager
    def running(self) -> Iterator[Budget]:
        old_handler = signal.signal(signal.SIGALRM, self._fire)
        old_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        started = time.monotonic()
        self._run_deadline = started + self.run_s
        self._arm(self.run_s, f"the whole run passed its {self.run_s:.0f} s budget")
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            if old_remaining > 0:  # give pytest-timeout back what is left of its time
                left = old_remaining - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))

    @contextmanager
    def input(self, item: object) -> Iterator[None]:
        self.current = item
        left = self._run_deadline - time.monotonic()
        if left <= self.per_input_s:
            self._arm(left, f"the whole run passed its {self.run_s:.0f} s budget")
        else:
            self._arm(self.per_input_s, f"one input ran over {self.per_input_s:.0f} s")
        try:
            yield
        finally:
            self._arm(self._run_deadline - time.monotonic(),
                      f"the whole run passed its {self.run_s:.0f} s budget")
            self.current = None


def fuzz(
    name: str, gen: Callable[[random.Random], T],
    check: Callable[[T], str | list[tuple[object, str]]], *,
    target: int = TARGET, batch: int = 100, per_item: int = 1,
    per_input_s: float = PER_INPUT_S,
) -> FuzzStats:
    """Run ``check`` on at least ``target`` distinct generated inputs; returns the stats.

    ``gen`` makes one input from a random source; ``check`` raises AssertionError on a
    property violation and returns the outcome's name (``accepted``, a rejection reason ...)
    for the summary, or for an input that is a batch, each input of it with its outcome
    (``per_item`` says how many inputs such a batch holds on average).
    """
    stats = FuzzStats()
    examples = math.ceil(target * HEADROOM / (batch * per_item))
    budget = Budget(name, max(RUN_S_MIN, target * RUN_S_PER_INPUT), per_input_s)

    @settings(max_examples=examples, deadline=None, derandomize=DERANDOMIZE, database=None,
              phases=(Phase.explicit, Phase.generate),  # shrinking a seed means nothing
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.integers(0, 2**64 - 1))
    def run(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(batch):
            item = gen(rnd)
            with budget.input(item):
                try:
                    outcome = check(item)
                except Exception as exc:  # name the input, not just the seed
                    raise AssertionError(f"fuzz {name}: {type(exc).__name__}: {exc}\n"
                                         f"input: {item!r}") from exc
            stats.add(item, outcome)

    started = time.monotonic()
    with budget.running():
        run()
    print(stats.summary(name, time.monotonic() - started))
    assert stats.distinct >= target, (
        f"fuzz {name}: only {stats.distinct} distinct inputs checked, want {target}")
    return stats

