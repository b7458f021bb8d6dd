"""A/B prelude for ``bench_pipeline --prelude``: the batch loops commit at every turn again
(``ONEMAP_COMMIT_INTERVAL=0``), as before 2026-12-06: the rules write each source's head once
per turn instead of once per interval, and each turn waits for its output, its state and its
offsets before the next. The difference between a run with and without it is what the commit
interval buys."""

from __future__ import annotations

import os

os.environ["ONEMAP_COMMIT_INTERVAL"] = "0"
