"""One SMS to one person about one alert transition, with its idempotency key."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class SmsMessage:
    """``key`` = alert transition id + recipient: sent at most once, whatever retries happen."""

    key: str
    alert_id: str
    recipient_id: str
    phone: str
    text: str
    exercise: bool = False
