"""Diagnostic prelude for ``bench_pipeline --prelude``: what :mod:`loop_stalls` logs, and
every producer flush over 20 ms with the producer's client id (the ingest and rules loops'
own producers, faust's for the lifecycle and sinks), so that an alert's slow hop can be
matched with what the worker waited for then (``BENCH_ALERT_LOG`` logs the alerts).
Changes nothing in the worker."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

_stalls = Path(__file__).with_name("loop_stalls.py")
_namespace: dict[str, Any] = {"__name__": "prelude"}
exec(compile(_stalls.read_text(), str(_stalls), "exec"), _namespace)
_log = _namespace["_log"]
_flush = AIOKafkaProducer.flush


@functools.wraps(_flush)
async def _timed_flush(self: AIOKafkaProducer) -> None:
    started = time.perf_counter()
    await _flush(self)
    took = time.perf_counter() - started
    if took > 0.02:
        _log(f"flush {self.client._client_id} {took * 1000:.0f} ms (wall)")


AIOKafkaProducer.flush = _timed_flush  # type: ignore[method-assign]


from onemap.streams import rules_loop  # noqa: E402

_write_some = rules_loop.LoopSourceState.write_some
_finish_seal = rules_loop.LoopSourceState.finish_seal
_slices: list[float] = []


@functools.wraps(_write_some)
def _timed_write_some(self: Any, *args: Any, **kwargs: Any) -> bool:
    started = time.perf_counter()
    done: bool = _write_some(self, *args, **kwargs)
    _slices.append(time.perf_counter() - started)
    return done


@functools.wraps(_finish_seal)
def _timed_finish_seal(self: Any, flight: Any, out: Any) -> None:
    _finish_seal(self, flight, out)
    _log(f"seal {len(_slices)} slices {sum(_slices) * 1000:.0f} ms "
         f"(longest {max(_slices, default=0) * 1000:.0f}), {len(flight.records)} sources, "
         f"{sum(len(v) for _, s in flight.records for _, v in s if isinstance(v, bytes))} bytes")
    _slices.clear()


rules_loop.LoopSourceState.write_some = _timed_write_some  # type: ignore[method-assign]
rules_loop.LoopSourceState.finish_seal = _timed_finish_seal  # type: ignore[method-assign]
