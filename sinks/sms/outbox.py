"""File and console SMS providers for the demo and tests (real SMPP comes in its own module).

The file outbox appends one JSON line per message and fsyncs, so what it says was sent is on
disk. Selected by URL: ``file://PATH`` or ``console://``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from onemap.errors import ConfigError
from onemap.records import dumps
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.roster import masked
from onemap.sinks.sms.templates import segments


class SmsProvider(Protocol):
    name: str

    def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]: ...

    def close(self) -> None: ...


class FileOutbox:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        with self.path.open("ab") as out:
            for m in messages:
                out.write(dumps({
                    "key": m.key, "alert_id": m.alert_id, "recipient_id": m.recipient_id,
                    "phone": m.phone, "text": m.text, "parts": segments(m.text),
                    "exercise": m.exercise, "submitted_at": now.isoformat(),
                }) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        return [Outcome.DELIVERED] * len(messages)

    def close(self) -> None:
        return None


class ConsoleOutbox:
    name = "console"

    def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        for m in messages:
            print(f"SMS {now:%H:%M:%S} -> {m.recipient_id} ({masked(m.phone)}): {m.text}",
                  file=sys.stdout, flush=True)
        return [Outcome.DELIVERED] * len(messages)

    def close(self) -> None:
        return None


def provider_from_url(url: str) -> SmsProvider:
    """One registry from URL scheme to provider."""
    if url.startswith("file://"):
        return FileOutbox(Path(url.removeprefix("file://")))
    if url in ("console://", "console"):
        return ConsoleOutbox()
    raise ConfigError(f"unknown SMS provider URL {url!r}; use file://PATH or console://",
                      field="ONEMAP_SMS_OUTBOX")
