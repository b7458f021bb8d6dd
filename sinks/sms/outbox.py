"""The SMS provider interface, the demo providers (file, console) and the URL registry.

A provider turns messages into one :class:`Outcome` each. The interface is async because the
real providers (SMPP, HTTP) wait on a network: a submit must never stall the event loop that
also consumes Kafka and pushes to the wall display. The file outbox appends one JSON line per
message and fsyncs, so what it says was sent is on disk.

Providers that hear back from the network (SMPP delivery receipts and mobile-originated
replies) hand each one to an ``on_event`` callback as an :class:`SmsEvent`.

Selected by URL (one registry, :func:`provider_from_url`): ``file://PATH``, ``console://``,
``smpp://system_id:password@host:port?...`` and ``https://...`` (see each module for options).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from onemap.errors import ConfigError
from onemap.records import dumps
from onemap.sinks.base import Outcome
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.roster import masked
from onemap.sinks.sms.templates import segments


@dataclasses.dataclass(frozen=True, slots=True)
class SmsEvent:
    """Something the network told us about a message or a person.

    ``receipt``: a delivery receipt for one submitted part; ``message_id`` is the id the gateway
    gave that part, ``key`` the :class:`SmsMessage` key it belongs to (None when this process
    no longer knows the id, e.g. after a restart), ``status`` the receipt state (``DELIVRD``,
    ``UNDELIV``, ``EXPIRED``, ``REJECTD``...), ``error`` the network error code.
    ``reply``: a mobile-originated message; ``phone`` is the sender, ``text`` what they wrote
    (``"1"`` acknowledges, per the templates). ``parts``: for a receipt, how many parts the
    message was sent in (0 when unknown), so a receipt of part 1 of 2 is not "delivered".
    """

    kind: Literal["receipt", "reply"]
    phone: str
    at: datetime
    message_id: str = ""
    key: str | None = None
    status: str = ""
    error: str = ""
    text: str = ""
    parts: int = 0

    @property
    def delivered(self) -> bool:
        return self.kind == "receipt" and self.status == "DELIVRD"

    def __repr__(self) -> str:  # the phone number is personal data: masked wherever printed
        return (f"SmsEvent(kind={self.kind!r}, phone={masked(self.phone)!r}, "
                f"at={self.at.isoformat()!r}, message_id={self.message_id!r}, key={self.key!r}, "
                f"status={self.status!r}, error={self.error!r}, text={self.text!r}, "
                f"parts={self.parts})")


#: Called on the event loop for each receipt or reply. It may be a coroutine function; if it
#: raises, an SMPP provider answers the SMSC with a temporary error so the event is redelivered.
EventCallback = Callable[[SmsEvent], Awaitable[None] | None]


class SmsProvider(Protocol):
    """Submit messages, one outcome each, in order.

    ``DELIVERED`` means accepted by the gateway (the handset's receipt comes later, as an
    :class:`SmsEvent`); ``RETRY`` a transient failure (throttled, timeout, connection lost);
    ``FAILED`` a permanent one (bad number, rejected). ``submit`` does not raise for network
    trouble: it returns ``RETRY``.
    """

    name: str

    async def check(self) -> None:
        """Start-up check; raises ComponentError naming what to fix (never a secret)."""

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]: ...

    async def close(self) -> None: ...


class FileOutbox:
    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    async def check(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        # A few hundred bytes and one fsync: short enough to do on the loop for the demo.
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

    async def close(self) -> None:
        return None


class ConsoleOutbox:
    name = "console"

    async def check(self) -> None:
        return None

    async def submit(self, messages: Sequence[SmsMessage], now: datetime) -> list[Outcome]:
        for m in messages:
            print(f"SMS {now:%H:%M:%S} -> {m.recipient_id} ({masked(m.phone)}): {m.text}",
                  file=sys.stdout, flush=True)
        return [Outcome.DELIVERED] * len(messages)

    async def close(self) -> None:
        return None


def provider_from_url(
    url: str, *, secret: str | None = None, on_event: EventCallback | None = None,
) -> SmsProvider:
    """One registry from URL scheme to provider.

    ``secret`` (from a secret setting) overrides a password or token in the URL, so the URL
    itself can live in plain configuration. ``on_event`` receives receipts and replies from
    providers that have them (SMPP); others ignore it.
    """
    if url.startswith("file://"):
        return FileOutbox(Path(url.removeprefix("file://")))
    if url in ("console://", "console"):
        return ConsoleOutbox()
    if url.startswith("smpp://"):
        from onemap.sinks.sms.smpp import SmppProvider
        return SmppProvider.from_url(url, secret=secret, on_event=on_event)
    if url.startswith(("https://", "http://")):
        from onemap.sinks.sms.http import HttpSmsProvider
        return HttpSmsProvider.from_url(url, secret=secret)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigError(f"unknown SMS provider URL scheme {scheme!r}; use file://PATH, console://, "
                      "smpp://USER@HOST:PORT or https://HOST/PATH", field="ONEMAP_SMS_OUTBOX")
