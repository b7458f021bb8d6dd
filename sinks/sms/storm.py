"""Storm protection for SMS: per-recipient limits, grouping and grouped summaries (digests).

Why: in a typhoon every orange and red station change reaches the city duty officer (~830
SMS in eight hours in the typhoon scenario). A phone that buzzes every 30 seconds is a phone
nobody reads, and the one red that matters drowns in it. This module decides, per message and
per recipient, whether it goes out now or is held for one grouped summary - a pure function of
(recipient state, message, now) returning the action and its reason, so every message sent or
held can be explained and tested without Redis. ``onemap.sinks.sms.storm_store`` keeps the state
in Redis; ``onemap.sinks.sms.sink`` wraps every provider with both.

The policy (numbers from the limits file, ``fixtures/registries/sms_limits.yaml``):

1. A message in an ``immediate`` class (red, always) is sent at once: never held, never grouped,
   and it uses no budget, so reds cannot starve lower levels nor lower levels delay a red.
2. A downgrade or all-clear of an alert whose message is still held for this recipient goes
   where that message went: into the summary (nobody hears "lifted" for what they were
   never told).
3. Grouping: after a message of one hazard type, class and town was sent to a person, more of
   the same within ``grouping.minutes`` are held for the summary (Alertmanager's
   ``group_interval``, with ``group_wait`` zero for the first: the first of a situation is
   never delayed).
4. Budget: at most ``max`` messages of a class per ``per_minutes`` (sliding window) per
   recipient; over it, the message is held.

A held message is ``hold`` when it starts a new batch and ``fold`` when it joins one already
waiting. A batch is flushed ``digest.wait_minutes`` after its first message (so what arrives
together is told together) and at most once per ``digest.interval_minutes``: as the message
itself when it is alone and still current, else as one summary (templates.render_digest).
A held message becomes *moot* when a later transition of its hazard reaches the same
recipient before the flush (escalated, de-escalated, resolved): it stays in the batch, is
counted in the summary under its own colour, and the summary says how many are no longer
current and why ("其中2条已升级"). Held messages leave the state only once their summary was
delivered, so none is lost.

Drills never mix with actual alerts: state, budgets and summaries are kept per ``stream``
(``actual`` / ``exercise``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from onemap.datafiles import RuleFile, StrictModel, load_model
from onemap.levels import COLOURS, WarningLevel
from onemap.records import Alert, loads
from onemap.registries import default_registries_dir
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.templates import (
    DIGEST_COUNT_LABELS,
    DIGEST_KINDS,
    MOOT_LABELS,
    DigestSummary,
    render_digest,
)

Colour = Literal["blue", "yellow", "orange", "red"]
DOWNWARD = ("de-escalated", "resolved")
#: Names the sent log uses besides the level classes; a class may not take them.
DOWNGRADES, DIGEST = "downgrades", "digest"
Stream = Literal["actual", "exercise"]


# --- the limits file ----------------------------------------------------------------------

class Limit(StrictModel):
    """At most ``max`` messages per ``per_minutes`` minutes (a sliding window)."""

    max: int = Field(ge=1, le=1000)
    per_minutes: int = Field(ge=1, le=24 * 60)


class LevelClass(StrictModel):
    """Colours that share a budget; ``immediate`` ones are never held and use no budget."""

    levels: tuple[Colour, ...] = Field(min_length=1)
    immediate: bool = False
    max: int | None = Field(default=None, ge=1, le=1000)
    per_minutes: int | None = Field(default=None, ge=1, le=24 * 60)

    @model_validator(mode="after")
    def _limit_iff_not_immediate(self) -> LevelClass:
        has_limit = self.max is not None or self.per_minutes is not None
        if self.immediate and has_limit:
            raise ValueError("an immediate class has no max/per_minutes: it is never held")
        if not self.immediate and (self.max is None or self.per_minutes is None):
            raise ValueError("a class that is not immediate needs both max and per_minutes")
        return self

    @property
    def limit(self) -> Limit | None:
        if self.max is None or self.per_minutes is None:
            return None
        return Limit(max=self.max, per_minutes=self.per_minutes)


class Grouping(StrictModel):
    """Same hazard type, class and town to one person within ``minutes``: one situation."""

    minutes: int = Field(ge=0, le=24 * 60)


class DigestPolicy(StrictModel):
    wait_minutes: int = Field(ge=0, le=24 * 60)
    interval_minutes: int = Field(ge=1, le=24 * 60)
    #: UCS-2 parts a summary may take (1: 70 characters)
    max_parts: int = Field(ge=1, le=4)
    #: places a summary names, most frequent first
    top_places: int = Field(ge=0, le=10)


class StormLimits(RuleFile):
    """The storm-protection policy: what is held, for how long, and how it is summarised."""

    classes: dict[str, LevelClass] = Field(min_length=1)
    downgrades: Limit
    grouping: Grouping
    digest: DigestPolicy

    @field_validator("classes")
    @classmethod
    def _every_colour_once_red_immediate(
            cls, classes: dict[str, LevelClass]) -> dict[str, LevelClass]:
        owner: dict[str, str] = {}
        for name, klass in classes.items():
            if name in (DOWNGRADES, DIGEST) or not name.isidentifier():
                raise ValueError(f"class name {name!r} is reserved or not a plain word")
            for colour in klass.levels:
                if colour in owner:
                    raise ValueError(f"colour {colour!r} is in both {owner[colour]!r} and "
                                     f"{name!r}")
                owner[colour] = name
        missing = [c.label for c in COLOURS if c.label not in owner]
        if missing:
            raise ValueError(f"colours in no class: {', '.join(missing)}")
        if not classes[owner["red"]].immediate:
            raise ValueError(f"class {owner['red']!r} holds red and must be immediate: red "
                             "alerts are never held back")
        return classes

    def class_of(self, level: WarningLevel, transition: str) -> str:
        """The budget a message uses: ``downgrades`` for downward transitions, else the class
        of its colour."""
        if transition in DOWNWARD or level == WarningLevel.NONE:
            return DOWNGRADES
        return next(n for n, c in self.classes.items() if level.label in c.levels)

    def limit_of(self, cls: str) -> Limit | None:
        """None for an immediate class."""
        if cls == DOWNGRADES:
            return self.downgrades
        return self.classes[cls].limit

    @property
    def horizon(self) -> timedelta:
        """How far back the sent log must reach to answer every question the policy asks."""
        minutes = [self.downgrades.per_minutes, self.grouping.minutes,
                   self.digest.interval_minutes]
        minutes += [c.per_minutes for c in self.classes.values() if c.per_minutes is not None]
        return timedelta(minutes=max(minutes))


def default_limits_path() -> Path:
    return default_registries_dir() / "sms_limits.yaml"


def load_limits(path: Path | None = None) -> StormLimits:
    """Load and validate strictly (file, line and field on any defect)."""
    return load_model(StormLimits, path or default_limits_path())


# --- the state of one recipient -----------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class StormItem:
    """A message as storm protection sees it: what it needs to decide, group and summarise,
    and the text to send if it is flushed on its own."""

    key: str
    alert_id: str
    hazard_id: str
    hazard_type: str
    level: str  # colour label; "none" for a resolution
    transition: str
    cls: str
    group: str
    district: str
    town: str
    at: datetime
    text: str
    #: why it is no longer current ("" while it is): see MOOT_LABELS
    moot: str = ""

    @classmethod
    def of(cls, message: SmsMessage, alert: Alert, limits: StormLimits,
           now: datetime) -> StormItem:
        place = alert.hazard.place
        klass = limits.class_of(alert.level, alert.transition)
        town = place.town_code or place.area_code
        return cls(key=message.key, alert_id=alert.alert_id, hazard_id=alert.hazard_id,
                   hazard_type=alert.hazard.hazard_type, level=alert.level.label,
                   transition=alert.transition, cls=klass,
                   group=f"{klass}|{alert.hazard.hazard_type}|{town}",
                   district=place.district_name, town=place.town_name,
                   at=now, text=message.text)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StormItem:
        return cls(**{**d, "at": datetime.fromisoformat(d["at"])})


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """One message that used a budget (or a summary slot)."""

    at: datetime
    cls: str
    group: str
    key: str

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> Sent:
        return cls(datetime.fromisoformat(d["at"]), d["cls"], d["group"], d["key"])


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A flush being delivered: fixed before submitting, so a retry (by this worker or
    another) sends the same text under the same idempotency key."""

    seq: int
    key: str
    text: str
    keys: tuple[str, ...]
    started_at: datetime
    kind: Literal["single", "digest"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Outgoing:
        return cls(seq=d["seq"], key=d["key"], text=d["text"], keys=tuple(d["keys"]),
                   started_at=datetime.fromisoformat(d["started_at"]), kind=d["kind"])


@dataclasses.dataclass(frozen=True, slots=True)
class RecipientState:
    """Storm-protection state of one recipient in one stream (actual or exercise).

    Its JSON (:meth:`to_json`) is what ``onemap:sms:storm:<stream>:<recipient_id>`` holds.
    """

    phone: str = ""
    sent: tuple[Sent, ...] = ()
    held: tuple[StormItem, ...] = ()
    last_flush_at: datetime | None = None
    seq: int = 0
    outgoing: Outgoing | None = None

    def to_json(self) -> bytes:
        """JSON with ISO 8601 times; orjson writes the dataclasses directly (fast: the state
        is written once per message)."""
        return orjson.dumps(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecipientState:
        last = d.get("last_flush_at")
        out = d.get("outgoing")
        return cls(phone=d.get("phone", ""),
                   sent=tuple(Sent.from_dict(s) for s in d.get("sent", [])),
                   held=tuple(StormItem.from_dict(h) for h in d.get("held", [])),
                   last_flush_at=datetime.fromisoformat(last) if last else None,
                   seq=int(d.get("seq", 0)),
                   outgoing=Outgoing.from_dict(out) if out else None)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> RecipientState:
        return cls() if raw is None else cls.from_dict(loads(raw))

    @property
    def waiting(self) -> tuple[StormItem, ...]:
        """Held messages not already part of the flush being delivered."""
        if self.outgoing is None:
            return self.held
        taken = set(self.outgoing.keys)
        return tuple(h for h in self.held if h.key not in taken)


# --- decisions ----------------------------------------------------------------------------

class Action(enum.Enum):
    SEND = "send"
    HOLD = "hold"  # held, starting a new batch
    FOLD = "fold"  # held, joining a batch already waiting
    DUPLICATE = "duplicate"  # already held (a replay): nothing to do


class Why(enum.Enum):
    IMMEDIATE = "immediate"  # an immediate class (red): never held
    WITHIN_LIMIT = "within_limit"
    OVER_LIMIT = "over_limit"
    GROUPED = "grouped"  # same type, class and town told within the grouping window
    FOLLOWS_HELD = "follows_held"  # a downgrade of an alert whose message is held
    ALREADY_HELD = "already_held"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    why: Why
    detail: str

    def __str__(self) -> str:
        return f"{self.action.value} ({self.why.value}: {self.detail})"


def decide(state: RecipientState, item: StormItem, now: datetime,
           limits: StormLimits) -> Decision:
    """Send now, or hold for the summary, and why. Pure.

    The rules are tried in order (module docstring): immediate, duplicate, follows a held
    message, grouping, budget.
    """
    limit = limits.limit_of(item.cls)
    if limit is None:
        return Decision(Action.SEND, Why.IMMEDIATE, f"class {item.cls} is never held")
    if any(h.key == item.key for h in state.held):
        return Decision(Action.DUPLICATE, Why.ALREADY_HELD, "this message is already held")
    held = Action.FOLD if state.waiting else Action.HOLD
    if item.transition in DOWNWARD and any(
            h.hazard_id == item.hazard_id for h in state.waiting):
        return Decision(held, Why.FOLLOWS_HELD,
                        f"the message about {item.hazard_id} it follows is held")
    group_since = now - timedelta(minutes=limits.grouping.minutes)
    told = [s for s in state.sent if s.group == item.group and s.at > group_since]
    if told or any(h.group == item.group for h in state.waiting):
        what = f"told at {told[-1].at.isoformat()}" if told else "already held"
        return Decision(held, Why.GROUPED,
                        f"same type, class and town {what} (grouping "
                        f"{limits.grouping.minutes} min)")
    since = now - timedelta(minutes=limit.per_minutes)
    used = sum(1 for s in state.sent if s.cls == item.cls and s.at > since)
    if used >= limit.max:
        return Decision(held, Why.OVER_LIMIT,
                        f"{item.cls}: {used} of {limit.max} per {limit.per_minutes} min used")
    return Decision(Action.SEND, Why.WITHIN_LIMIT,
                    f"{item.cls}: {used + 1} of {limit.max} per {limit.per_minutes} min")


def _moot_reason(later: StormItem) -> str:
    if later.transition in ("escalated", "de-escalated", "resolved"):
        return later.transition
    return "superseded"


def apply(state: RecipientState, item: StormItem, decision: Decision, now: datetime,
          limits: StormLimits, *, phone: str = "") -> RecipientState:
    """The state after ``decision`` about ``item``. Pure.

    Any later message about a hazard makes its held messages moot (whatever is decided for
    the later one); a sent message of a limited class is logged against its budget (a slot
    reserved before submitting, given back by :func:`release` if the submit fails).
    """
    if decision.action == Action.DUPLICATE:
        return state
    horizon = now - limits.horizon
    sent = tuple(s for s in state.sent if s.at > horizon)
    held = tuple(
        dataclasses.replace(h, moot=_moot_reason(item))
        if h.hazard_id == item.hazard_id and h.key != item.key else h
        for h in state.held)
    if decision.action == Action.SEND:
        if limits.limit_of(item.cls) is not None:
            sent += (Sent(now, item.cls, item.group, item.key),)
    else:
        held += (item,)
    return dataclasses.replace(state, sent=sent, held=held, phone=phone or state.phone)


def release(state: RecipientState, key: str) -> RecipientState:
    """Give back the budget slot of a message whose submit failed (it will be retried)."""
    return dataclasses.replace(state, sent=tuple(s for s in state.sent if s.key != key))


def next_due(state: RecipientState, limits: StormLimits) -> datetime | None:
    """When the next flush may happen; None with nothing held."""
    if state.outgoing is not None:
        return state.outgoing.started_at
    if not state.held:
        return None
    due = min(h.at for h in state.held) + timedelta(minutes=limits.digest.wait_minutes)
    if state.last_flush_at is not None:
        due = max(due, state.last_flush_at + timedelta(minutes=limits.digest.interval_minutes))
    return due


def summarise(items: Sequence[StormItem], now: datetime, limits: StormLimits,
              exercise: bool) -> DigestSummary:
    """Counts by colour (downgrades apart), moot counts by reason, the most frequent places."""
    counts: Counter[str] = Counter(
        i.transition if i.transition in DOWNWARD else i.level for i in items)
    moot = Counter(i.moot for i in items if i.moot)
    oldest = min(i.at for i in items)
    minutes = max(1, math.ceil((now - oldest).total_seconds() / 60))
    types = {i.hazard_type for i in items}
    kind = DIGEST_KINDS.get(next(iter(types)), "") if len(types) == 1 else ""
    districts = Counter(i.district for i in items)
    towns = Counter((i.district, i.town) for i in items)
    where, places, more = "", tuple[str, ...](), False
    if len(towns) == 1:  # one town: named up front
        where = "".join(next(iter(towns)))
    else:
        ranked: Counter[str] = Counter()
        if len(districts) == 1:  # one district: named up front, its towns listed
            where = next(iter(districts))
            ranked.update({town: n for (_, town), n in towns.items() if town})
        else:
            ranked.update({d: n for d, n in districts.items() if d})
        order = sorted(ranked.items(), key=lambda kv: (-kv[1], kv[0]))
        k = limits.digest.top_places
        places = tuple(name for name, _ in order[:k])
        more = len(order) > k
    return DigestSummary(
        minutes=minutes, total=len(items),
        counts={k: counts[k] for k in DIGEST_COUNT_LABELS if counts[k]},
        moot={k: moot[k] for k in MOOT_LABELS if moot[k]},
        where=where, places=places, more_places=more, kind=kind, exercise=exercise)


def flush_key(stream: str, recipient_id: str, seq: int) -> str:
    """The idempotency key of a flush (``onemap:sms:sent:`` + this): one per batch."""
    return f"digest/{stream}/{recipient_id}/{seq}"


def plan_flush(state: RecipientState, recipient_id: str, stream: Stream, now: datetime,
               limits: StormLimits) -> Outgoing | None:
    """The flush due now, if any. Pure.

    A lone message that is still current goes out as itself (its full text is more useful
    than a summary of one); anything else becomes one summary.
    """
    if state.outgoing is not None:
        return state.outgoing
    due = next_due(state, limits)
    if due is None or now < due:
        return None
    items = state.held
    seq = state.seq + 1
    kind: Literal["single", "digest"] = "digest"
    if len(items) == 1 and not items[0].moot:
        text, kind = items[0].text, "single"
    else:
        summary = summarise(items, now, limits, exercise=stream == "exercise")
        text = render_digest(summary, limits.digest.max_parts)
    return Outgoing(seq=seq, key=flush_key(stream, recipient_id, seq), text=text,
                    keys=tuple(i.key for i in items), started_at=now, kind=kind)


def complete_flush(state: RecipientState, outgoing: Outgoing, now: datetime) -> RecipientState:
    """The state once ``outgoing`` was delivered (or failed for good): its messages leave."""
    taken = set(outgoing.keys)
    return dataclasses.replace(
        state, held=tuple(h for h in state.held if h.key not in taken), last_flush_at=now,
        seq=max(state.seq, outgoing.seq), outgoing=None,
        sent=(*state.sent, Sent(now, DIGEST, "", outgoing.key)))
