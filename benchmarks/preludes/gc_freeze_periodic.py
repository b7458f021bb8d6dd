"""A/B prelude for ``bench_pipeline --prelude``: every 5 s what survived is put out of the
cyclic collector's sight (``gc.freeze()``), so that its full collections scan only what the
last seconds made, not every source's state; every 10 minutes everything is collected once
(``gc.unfreeze(); gc.collect(); gc.freeze()``). From a thread of its own (``gc.freeze`` only
moves the generations' lists, under the GIL)."""

from __future__ import annotations

import gc
import threading
import time


def _keep_frozen() -> None:
    full_at = time.monotonic()
    while True:
        time.sleep(5.0)
        if time.monotonic() - full_at >= 600:
            full_at = time.monotonic()
            gc.unfreeze()
            gc.collect()
        gc.freeze()


threading.Thread(target=_keep_frozen, name="gc-freeze", daemon=True).start()
