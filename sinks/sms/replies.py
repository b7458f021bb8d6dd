"""Acknowledgement by SMS reply: an officer texts "1" back and the alert's loop records it.

The flow: when an alert that asks for acknowledgement (``回复1确认``) is sent, the sender's
edge remembers, per phone, which alerts that phone was sent (:func:`remember_sent`). A
mobile-originated message from that phone is parsed (:func:`parse_reply`), matched to one of
those alerts (:func:`choose`), and recorded as a step of the closed loop
(:func:`onemap.sinks.response.record_step`) with the officer's roster id as the actor. The
sender gets a short confirmation, or a polite help text when the reply cannot be understood.

What a reply may say (full-width digits and spaces are fine):

- ``1``, ``确认``, ``收到``: acknowledge the alert most recently sent to this phone;
- ``1 4821`` (or ``1#4821``, ``确认4821``): acknowledge the alert with short code 4821 (the
  code of a hazard, :func:`short_code`; shown in escalation texts);
- ``2`` / ``到场`` and ``3`` / ``处置完毕`` (optionally with a code): the unit is on scene /
  the situation is handled. The loop's own rules apply (acknowledge first; only forward).

Why "the most recently sent" for a bare "1": it is the message on top of the officer's phone,
the one they are answering; for any other, the code says which. Replies never raise for bad
input (an unknown phone or text gets a help reply, at most one per phone per hour so that two
auto-responders cannot ping-pong); they do raise if Redis is down, so the SMPP provider asks
the SMSC to redeliver the reply instead of losing an acknowledgement.

Redis keys (docs/sms-escalation.md):

- ``onemap:sms:recent:<phone>`` hash: hazard_id -> JSON of the last alert of that hazard sent
  to the phone (``alert_id``, ``seq``, ``recipient_id``, ``at``, ``code``, ``label``); at most
  30 hazards, kept 7 days after the last send. ``<phone>`` is the normalised number.
- ``onemap:sms:help:<phone>`` string: a help reply was sent within the hour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import orjson
import redis.asyncio as aioredis

from onemap.records import Alert
from onemap.rules.response import STEP_LABELS, Step
from onemap.sinks.response import record_step
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import SmsEvent
from onemap.sinks.sms.roster import DutyRoster, masked, normalize_phone
from onemap.sinks.sms.templates import DRILL_TAG, HAZARD_NAMES, SENDER_TAG

log = logging.getLogger(__name__)

RECENT_PREFIX: Final = "onemap:sms:recent:"
RECENT_TTL_S: Final = 7 * 24 * 3600
RECENT_MAX: Final = 30
HELP_PREFIX: Final = "onemap:sms:help:"
HELP_INTERVAL_S: Final = 3600
#: Transitions whose text asks for an acknowledgement.
ASKING: Final = ("new", "escalated")

#: What each reply word means: the loop step it records.
WORDS: Final = {"1": "acknowledged", "确认": "acknowledged", "收到": "acknowledged",
                "已确认": "acknowledged", "已收到": "acknowledged",
                "2": "on_scene", "到场": "on_scene", "已到场": "on_scene",
                "3": "handled", "处置完毕": "handled", "已处置": "handled",
                "处置": "handled"}
_REPLY = re.compile(r"^(?P<word>\d|[\u4e00-\u9fff]{2,4})\s*[#＃:：,，\-]?\s*(?P<code>\d{4})?$")

ReplyOutcome = Literal["accepted", "already", "refused", "unknown-text", "unknown-phone",
                       "nothing-to-acknowledge", "unknown-code"]


def short_code(hazard_id: str) -> str:
    """A 4-digit code naming a hazard in replies ("1 4821"): stable, the same for everyone
    told of it, and only compared among the few alerts one phone was recently sent.

    >>> short_code("rainstorm:ZH-AWS-028") == short_code("rainstorm:ZH-AWS-028")
    True
    >>> len(short_code("water_level:ZH-RIV-001"))
    4
    """
    digest = hashlib.sha256(hazard_id.encode()).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 10000:04d}"


def alert_label(alert: Alert) -> str:
    """How replies name an alert: 红色暴雨预警 金湾区平沙镇美平社区."""
    kind = HAZARD_NAMES.get(alert.hazard.hazard_type, "")
    return f"{alert.level.chinese}{kind}预警 {alert.hazard.place.label}"


@dataclasses.dataclass(frozen=True, slots=True)
class RecentAlert:
    """An alert sent to a phone, as the reply handler needs it."""

    hazard_id: str
    alert_id: str
    seq: int
    recipient_id: str
    at: datetime
    code: str
    label: str
    exercise: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"hazard_id": self.hazard_id, "alert_id": self.alert_id, "seq": self.seq,
                "recipient_id": self.recipient_id, "at": self.at.isoformat(),
                "code": self.code, "label": self.label, "exercise": self.exercise}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecentAlert:
        return cls(hazard_id=d["hazard_id"], alert_id=d["alert_id"], seq=int(d["seq"]),
                   recipient_id=d["recipient_id"], at=datetime.fromisoformat(d["at"]),
                   code=d["code"], label=d["label"], exercise=bool(d.get("exercise")))


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    """What a reply asks for: a loop step, optionally for the alert with a short code."""

    step: str | None
    code: str | None = None


def parse_reply(text: str) -> Command:
    """Pure: the command in a reply; ``step`` None when the text is not understood.

    >>> parse_reply("1"), parse_reply(" １ ４８２１ "), parse_reply("确认#0042")
    (Command(step='acknowledged', code=None), Command(step='acknowledged', code='4821'), \
Command(step='acknowledged', code='0042'))
    >>> parse_reply("2").step, parse_reply("处置完毕").step, parse_reply("what?").step
    ('on_scene', 'handled', None)
    """
    clean = unicodedata.normalize("NFKC", text).strip().rstrip("。.!！")
    match = _REPLY.match(clean)
    if match is None or match["word"] not in WORDS:
        return Command(None)
    return Command(WORDS[match["word"]], match["code"])


def choose(command: Command, recent: Sequence[RecentAlert]) -> tuple[RecentAlert | None, str]:
    """Pure: which alert a reply is about, and why.

    No code: the one most recently sent. A code: the most recent alert with that code.
    """
    if not recent:
        return None, "nothing-to-acknowledge"
    newest_first = sorted(recent, key=lambda r: r.at, reverse=True)
    if command.code is None:
        return newest_first[0], "latest"
    for candidate in newest_first:
        if candidate.code == command.code:
            return candidate, "by code"
    return None, "unknown-code"


def tagged(text: str, exercise: bool = False) -> str:
    return (DRILL_TAG if exercise else "") + SENDER_TAG + text


HELP_TEXT: Final = tagged("未能识别您的回复。回复1确认最近一条预警，回复“1 编号”确认指定预警，"
                          "2到场，3处置完毕")
UNKNOWN_PHONE_TEXT: Final = tagged("本号码为应急值班短信号码，未查到发给您的预警。"
                                   "紧急情况请拨打110、119")
NOTHING_TEXT: Final = tagged("未查到近期发给您、需要确认的预警")


#: Replies about one alert, by outcome (``{label}``, ``{step}``, ``{code}`` filled in).
_ABOUT: Final = {"accepted": "{step}：{label}（编号{code}），谢谢",
                 "already": "此前{step}：{label}",
                 "acknowledge first": "请先回复1确认：{label}",
                 "refused": "未记录：{label} 已进入后续环节"}
_GENERAL: Final = {"unknown-text": HELP_TEXT, "unknown-phone": UNKNOWN_PHONE_TEXT,
                   "nothing-to-acknowledge": NOTHING_TEXT}


def reply_text(outcome: ReplyOutcome, target: RecentAlert | None, step: str | None,
               why: str = "", code: str | None = None) -> str:
    """Pure: the confirmation or help text for each outcome (Chinese, one SMS segment)."""
    if outcome == "unknown-code":
        return tagged(f"未找到编号{code}的预警。回复1确认最近一条预警")
    if target is None or outcome in _GENERAL:
        return _GENERAL.get(outcome, NOTHING_TEXT)
    form = _ABOUT["acknowledge first"] if why == "acknowledge first" else _ABOUT[outcome]
    return tagged(form.format(step=STEP_LABELS.get(step or "", "已记录"), label=target.label,
                              code=target.code), target.exercise)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyResult:
    """What a reply did: the outcome (a metric label), the reason, the text sent back."""

    outcome: ReplyOutcome
    reason: str
    reply: str | None
    hazard_id: str | None = None
    actor: str | None = None


def recent_key(phone: str) -> str:
    return RECENT_PREFIX + normalize_phone(phone)


async def remember_sent(client: aioredis.Redis, alert: Alert, messages: Sequence[SmsMessage],
                        now: datetime) -> None:
    """After a send that asks for acknowledgement: each phone now has this alert as its most
    recent (for "1" replies). The caller decides which sends ask (:data:`ASKING`)."""
    if not messages:
        return
    code, label = short_code(alert.hazard_id), alert_label(alert)
    async with client.pipeline(transaction=False) as pipe:
        for m in messages:
            record = RecentAlert(alert.hazard_id, alert.alert_id, alert.seq, m.recipient_id, now,
                                 code, label, alert.hazard.exercise)
            key = recent_key(m.phone)
            pipe.hset(key, alert.hazard_id, orjson.dumps(record.to_dict()))
            pipe.expire(key, RECENT_TTL_S)
            pipe.hlen(key)
        results = await pipe.execute()
    for m, size in zip(messages, results[2::3], strict=True):
        if int(size) > RECENT_MAX:
            await _prune(client, recent_key(m.phone))


async def _prune(client: aioredis.Redis, key: str) -> None:
    entries = await read_recent(client, key)
    oldest = sorted(entries, key=lambda r: r.at)[:len(entries) - RECENT_MAX]
    if oldest:
        await client.hdel(key, *[r.hazard_id for r in oldest])


async def read_recent(client: aioredis.Redis, key: str) -> list[RecentAlert]:
    raw: dict[bytes | str, bytes | str] = await client.hgetall(key)
    out: list[RecentAlert] = []
    for value in raw.values():
        try:
            out.append(RecentAlert.from_dict(orjson.loads(value)))
        except (ValueError, KeyError, TypeError):
            continue  # a foreign or old-format value: not worth failing a reply for
    return out


async def handle_reply(client: aioredis.Redis, roster: DutyRoster, event: SmsEvent,
                       now: datetime) -> ReplyResult:
    """Record what a reply says on the alert's loop; return the outcome and the text to send
    back (None: send nothing). Raises only ``RedisError`` (the SMSC will redeliver)."""
    phone = normalize_phone(event.phone)
    command = parse_reply(event.text)
    officer = roster.by_phone(phone)
    recent = await read_recent(client, recent_key(phone))
    known = officer is not None or bool(recent)
    if command.step is None:
        outcome: ReplyOutcome = "unknown-text" if known else "unknown-phone"
        return await _help(client, phone, outcome, f"not understood: {event.text[:20]!r}")
    if not known:
        return await _help(client, phone, "unknown-phone", "phone not in the roster or sent to")
    target, why = choose(command, recent)
    if target is None:
        outcome = "unknown-code" if why == "unknown-code" else "nothing-to-acknowledge"
        return ReplyResult(outcome, why, reply_text(outcome, None, command.step,
                                                    code=command.code))
    actor = officer.id if officer is not None else target.recipient_id
    step = Step(command.step, actor=actor, via="sms", at=now, seq=target.seq)
    _, reason = await record_step(client, target.hazard_id, step)
    outcome = "accepted" if reason == "accepted" else \
        "already" if reason == "already" else "refused"
    log.info("SMS reply from %s (%s): %s on %s -> %s", masked(phone), actor, command.step,
             target.hazard_id, reason)
    return ReplyResult(outcome, reason, reply_text(outcome, target, command.step, reason),
                       target.hazard_id, actor)


async def _help(client: aioredis.Redis, phone: str, outcome: ReplyOutcome,
                reason: str) -> ReplyResult:
    """A help reply, at most one per phone per hour (auto-responders must not loop)."""
    first = await client.set(HELP_PREFIX + phone, "1", nx=True, ex=HELP_INTERVAL_S)
    log.info("SMS reply from %s not used: %s%s", masked(phone), reason,
             "" if first else " (help already sent within the hour)")
    return ReplyResult(outcome, reason, reply_text(outcome, None, None) if first else None)
