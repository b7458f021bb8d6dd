"""The sink interface every outlet implements, and the outcome of delivering one item."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

from onemap.records import Alert


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # already delivered earlier (idempotency key seen): not sent again
    RETRY = "retry"  # transient failure: try again later
    FAILED = "failed"  # will never succeed: dead letter


class AlertSink(Protocol):
    """An outlet for alert transitions: send a batch, one outcome per alert, in order."""

    name: str

    async def check(self) -> None:
        """Start-up check; raises ComponentError saying what to fix."""

    async def send(self, batch: Sequence[Alert]) -> list[Outcome]: ...

    async def close(self) -> None: ...
