"""A/B prelude for ``bench_pipeline --prelude``: a commit's state writing takes half of the
worker while it runs beside the turns (``batch_loop.COMMIT_SHARE``, a third by default): a
shorter commit, so fewer of its sources are made by the turns that touch them first (copy
on write). Tried and not kept: benchmarks/results/pipeline-network-runs.md."""

from __future__ import annotations

from onemap.streams import batch_loop

batch_loop.COMMIT_SHARE = 1 / 2
