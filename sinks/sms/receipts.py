"""Delivery receipts: what the handsets' network said about each message of an alert.

An SMPP delivery receipt (a ``deliver_sm`` with esm_class 0x04, parsed by
:meth:`onemap.sinks.sms.smpp.SmppProvider.event_from`) arrives per part of a message. It is
merged into one state per (alert transition, recipient) (:func:`merge_receipt`, pure):
``delivered`` once every part is delivered, ``failed`` as soon as one part is undeliverable
(UNDELIV, REJECTD, DELETED), ``expired`` when the network gave up (EXPIRED), else
``pending`` (ENROUTE, ACCEPTD, UNKNOWN, or parts still missing). A failure sticks: a later
"delivered" part does not make a message whole.

Redis key (docs/sms-escalation.md):

- ``onemap:sms:receipt:<alert_id>`` hash: recipient_id -> JSON ``{"state", "status",
  "error", "at", "parts": {message_id: status}, "expected"}``; kept 30 days. The wall and ops
  read it to see who actually got a warning.

A receipt whose message this process no longer knows (after a restart the SMPP provider's
id-to-message map is gone) is counted as ``unmatched`` and logged, not stored.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from onemap.sinks.sms.outbox import SmsEvent
from onemap.sinks.sms.roster import masked

log = logging.getLogger(__name__)

RECEIPT_PREFIX: Final = "onemap:sms:receipt:"
RECEIPT_TTL_S: Final = 30 * 24 * 3600
#: Keys of messages that are not about an alert (replies to officers' SMS).
REPLY_KEY_PREFIX: Final = "reply:"
_ATTEMPTS: Final = 20

ReceiptState = Literal["delivered", "pending", "expired", "failed"]
_STATES: Final[dict[str, ReceiptState]] = {
    "DELIVRD": "delivered", "EXPIRED": "expired", "UNDELIV": "failed", "REJECTD": "failed",
    "DELETED": "failed"}
UNDELIVERABLE: Final = ("failed", "expired")


def receipt_key(alert_id: str) -> str:
    return RECEIPT_PREFIX + alert_id


def receipt_state(status: str) -> ReceiptState:
    """
    >>> receipt_state("DELIVRD"), receipt_state("UNDELIV"), receipt_state("ENROUTE")
    ('delivered', 'failed', 'pending')
    """
    return _STATES.get(status.upper(), "pending")


def merge_receipt(previous: dict[str, Any] | None, event: SmsEvent) -> dict[str, Any]:
    """Pure: the per-recipient summary after one more part's receipt.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 8, 23, tzinfo=UTC)
    >>> one = merge_receipt(None, SmsEvent("receipt", "1", t, message_id="A", status="DELIVRD",
    ...                                    parts=2))
    >>> one["state"], merge_receipt(one, SmsEvent("receipt", "1", t, message_id="B",
    ...                                           status="DELIVRD"))["state"]
    ('pending', 'delivered')
    """
    parts: dict[str, str] = dict((previous or {}).get("parts", {}))
    parts[event.message_id or f"#{len(parts) + 1}"] = event.status.upper()
    expected = max(event.parts, int((previous or {}).get("expected", 0)))
    states = [receipt_state(s) for s in parts.values()]
    state: ReceiptState
    if "failed" in states:
        state = "failed"
    elif "expired" in states:
        state = "expired"
    elif all(s == "delivered" for s in states) and len(states) >= expected:
        state = "delivered"
    else:
        state = "pending"
    return {"state": state, "status": event.status.upper(), "error": event.error,
            "at": event.at.isoformat(), "parts": parts, "expected": expected}


@dataclasses.dataclass(frozen=True, slots=True)
class ReceiptResult:
    """``outcome``: recorded, unmatched (message unknown here) or reply (not an alert's)."""

    outcome: Literal["recorded", "unmatched", "reply"]
    state: ReceiptState
    alert_id: str = ""
    recipient_id: str = ""
    previous_state: ReceiptState | None = None

    @property
    def newly_undeliverable(self) -> bool:
        """The message just became undeliverable (dead-letter it once, not per part)."""
        return self.outcome == "recorded" and self.state in UNDELIVERABLE and \
            self.previous_state not in UNDELIVERABLE


def split_key(key: str) -> tuple[str, str]:
    """An SmsMessage key ``<alert_id>/<recipient_id>`` into its two parts.

    >>> split_key("rainstorm:ZH-AWS-028#1/ZH-DUTY-440404-01")
    ('rainstorm:ZH-AWS-028#1', 'ZH-DUTY-440404-01')
    """
    alert_id, _, recipient_id = key.rpartition("/")
    return alert_id, recipient_id


async def record_receipt(client: aioredis.Redis, event: SmsEvent) -> ReceiptResult:
    """Merge one receipt into its alert's hash. Raises ``RedisError`` (the SMSC redelivers)."""
    state = receipt_state(event.status)
    if event.key is None:
        log.info("receipt %s (%s) for %s matches no message sent by this process",
                 event.message_id, event.status, masked(event.phone))
        return ReceiptResult("unmatched", state)
    if event.key.startswith(REPLY_KEY_PREFIX):
        return ReceiptResult("reply", state)
    alert_id, recipient_id = split_key(event.key)
    key = receipt_key(alert_id)
    for _ in range(_ATTEMPTS):
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.hget(key, recipient_id)
                previous: dict[str, Any] | None = None if raw is None else orjson.loads(raw)
                merged = merge_receipt(previous, event)
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(key, recipient_id, orjson.dumps(merged))
                pipe.expire(key, RECEIPT_TTL_S)
                await pipe.execute()
                return ReceiptResult("recorded", merged["state"], alert_id, recipient_id,
                                     None if previous is None else previous["state"])
            except WatchError:
                continue
    raise RuntimeError(f"could not record a receipt for {alert_id}: too many writers")


async def read_receipts(client: aioredis.Redis, alert_id: str) -> dict[str, dict[str, Any]]:
    """recipient_id -> summary, for one alert transition."""
    raw: dict[bytes | str, bytes | str] = await client.hgetall(receipt_key(alert_id))
    return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}


def dead_letter_record(event: SmsEvent, result: ReceiptResult, now: datetime) -> dict[str, Any]:
    """Pure: what an undeliverable message's dead letter says (no phone number, no text)."""
    return {"stage": "sms", "reason": f"undeliverable:{result.state}",
            "alert_id": result.alert_id, "recipient_id": result.recipient_id,
            "status": event.status, "error": event.error, "message_id": event.message_id,
            "phone": masked(event.phone), "rejected_at": now.isoformat()}
