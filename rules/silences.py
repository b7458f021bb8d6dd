"""Silences: who muted the notifications of which hazards, why, and until when.

Why (Alertmanager's silences): a station under maintenance, a hazard point being repaired, a
drill announced in advance, all keep producing warnings that the people on duty already know
about. A silence mutes the *notifications* (SMS, escalation) of the hazards it matches for a
stated time, with who set it and why; the wall still shows every alert, marked 已静默, so
nothing disappears from the command room. The lifecycle stage reads the silences on a timer
(``onemap.sinks.silences.read_silences``) and asks :func:`silenced_by` for each hazard; the
alert then carries ``notify="silenced"`` and the silence in ``notify_reason``.

A silence matches a hazard when it is in force at the hazard's event time
(``starts_at <= at < ends_at``) and every matcher it sets matches (an empty matcher matches
anything). ``area_code`` matches by prefix on any of the place's codes, so a town's code
matches the town and all its villages (administrative codes nest by prefix), but a
village's code never matches a hazard placed only on the town. A silence must name at least
one of source, hazard type, feed or area: one that would mute the whole city is refused.

Silences are never deleted: expiring one sets ``ends_at`` (the record of who muted what stays).

>>> from datetime import UTC, datetime, timedelta
>>> from onemap.rules.urgency import example_hazard
>>> h = example_hazard()                   # a geohazard point in 香洲区拱北街道 (440402001)
>>> t = h.observed_at
>>> s = Silence("s1", Matchers(area_code="440402001"), t - timedelta(hours=1),
...             t + timedelta(hours=1), "张三", "隐患点治理施工")
>>> validate_silence(s), matches(s, h, t), matches(s, h, t + timedelta(hours=2))
('valid', True, False)
>>> silenced_by(h, [s], t) is s
True
>>> validate_silence(Silence("s2", Matchers(status="actual"), t, t + timedelta(hours=1),
...                          "张三", "全部静默"))
'a silence must name a source, hazard type, feed or area'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final

from onemap.records import Hazard

#: What :func:`validate_silence` answers for a silence that may be stored.
VALID: Final = "valid"
STATUSES: Final = ("", "actual", "exercise")
MAX_TEXT: Final = 500
#: A silence longer than this is refused: a forgotten mute during a typhoon costs lives.
MAX_DURATION: Final = timedelta(days=31)
_ID: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_CODE: Final = re.compile(r"^[0-9]{2,12}$")
_NAME: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Matchers:
    """What a silence matches; an empty field matches anything."""

    source_id: str = ""
    hazard_type: str = ""
    feed: str = ""
    #: an administrative code: matches the place's codes by prefix (a town: all its villages)
    area_code: str = ""
    #: "actual", "exercise" or "" (both)
    status: str = ""

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Matchers:
        """From JSON; unknown keys and values that are not strings are errors (ValueError)."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown matcher(s) {', '.join(sorted(unknown))}")
        bad = sorted(k for k, v in d.items() if not isinstance(v, str))
        if bad:
            raise ValueError(f"matcher {bad[0]} must be a string")
        return cls(**{k: v.strip() for k, v in d.items()})


@dataclasses.dataclass(frozen=True, slots=True)
class Silence:
    """One silence: what it matches, when it is in force, who set it and why."""

    id: str
    matchers: Matchers
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def state(self, at: datetime) -> str:
        """'pending' (not yet in force), 'active' or 'expired' at ``at``."""
        if at < self.starts_at:
            return "pending"
        return "active" if at < self.ends_at else "expired"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": self.matchers.to_dict(),
                "starts_at": self.starts_at.isoformat(), "ends_at": self.ends_at.isoformat(),
                "created_by": self.created_by, "comment": self.comment}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Silence:
        """From its stored JSON; KeyError / ValueError / TypeError when it is not one."""
        return cls(id=str(d["id"]), matchers=Matchers.from_dict(d.get("matchers", {})),
                   starts_at=datetime.fromisoformat(d["starts_at"]),
                   ends_at=datetime.fromisoformat(d["ends_at"]),
                   created_by=str(d["created_by"]), comment=str(d.get("comment", "")))


def validate_silence(silence: Silence, now: datetime | None = None) -> str:
    """:data:`VALID`, or why the silence may not be stored.

    With ``now``, a silence that has already ended is refused too (creating one is a
    mistake); without it only the silence itself is checked (as the store does).
    """
    m = silence.matchers
    problems = (
        (not _ID.match(silence.id), "the id must be 1-64 letters, digits or _.:-"),
        (not (m.source_id or m.hazard_type or m.feed or m.area_code),
         "a silence must name a source, hazard type, feed or area"),
        (m.status not in STATUSES, f"status must be actual or exercise, not {m.status!r}"),
        (bool(m.area_code) and not _CODE.match(m.area_code),
         f"area_code must be an administrative code (digits), not {m.area_code!r}"),
        (any(v and not _NAME.match(v) for v in (m.hazard_type, m.feed)),
         "hazard_type and feed are names of letters, digits or _.:-"),
        (len(m.source_id) > 200, "source_id longer than 200 characters"),
        (silence.starts_at.tzinfo is None or silence.ends_at.tzinfo is None,
         "starts_at and ends_at must carry their timezone"),
        (not silence.created_by.strip(), "who sets the silence is required"),
        (not silence.comment.strip(), "a comment (why) is required"),
        (len(silence.comment) > MAX_TEXT or len(silence.created_by) > 100,
         f"comment longer than {MAX_TEXT} characters (or created_by than 100)"),
    )
    why = next((why for bad, why in problems if bad), None)
    if why is not None:
        return why
    if silence.ends_at <= silence.starts_at:
        return "ends_at must be after starts_at"
    if silence.ends_at - silence.starts_at > MAX_DURATION:
        return f"a silence may last at most {MAX_DURATION.days} days"
    if now is not None and silence.ends_at <= now:
        return "the silence would already have ended"
    return VALID


def _area_matches(code: str, hazard: Hazard) -> bool:
    p = hazard.place
    return any(c.startswith(code) for c in (p.city_code, p.district_code, p.town_code,
                                            p.village_code) if c)


def matches(silence: Silence, hazard: Hazard, at: datetime) -> bool:
    """Whether ``silence`` mutes ``hazard`` at ``at`` (the hazard's event time)."""
    if not silence.active(at):
        return False
    m = silence.matchers
    return ((not m.source_id or m.source_id == hazard.source_id)
            and (not m.hazard_type or m.hazard_type == hazard.hazard_type)
            and (not m.feed or m.feed == hazard.feed)
            and (not m.status or m.status == ("exercise" if hazard.exercise else "actual"))
            and (not m.area_code or _area_matches(m.area_code, hazard)))


def silenced_by(hazard: Hazard, silences: Iterable[Silence], at: datetime) -> Silence | None:
    """The silence muting ``hazard`` at ``at``, or None.

    When several match, the one that ends last (then the smallest id): the notification says
    until when the hazard stays muted, and the answer does not depend on the list's order.
    """
    found = [s for s in silences if matches(s, hazard, at)]
    return min(found, key=lambda s: (-s.ends_at.timestamp(), s.id)) if found else None
