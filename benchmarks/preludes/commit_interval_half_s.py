"""A/B prelude for ``bench_pipeline --prelude``: the batch loops commit every 0.5 s
(``ONEMAP_COMMIT_INTERVAL``, the default before 2026-12-07 evening), in the background as
now. Against no prelude: what the 5 s interval buys; against ``inline_commit_half_s.py``:
what committing beside the turns buys."""

from __future__ import annotations

import os

os.environ["ONEMAP_COMMIT_INTERVAL"] = "0.5"
