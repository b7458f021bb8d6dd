"""A/B prelude for ``bench_pipeline --prelude``: a commit's state writing takes half of the
worker while it runs (``_SourceStateWrite.SHARE``, a third by default): a shorter commit,
so fewer of its sources are made by the turns that touch them first (copy on write)."""

from __future__ import annotations

from onemap.streams import rules_loop

rules_loop._SourceStateWrite.SHARE = 1 / 2
