"""The duty roster: who is on call for which area, hazard types and levels, and how an
unacknowledged alert escalates up the administrative levels.

Loaded strictly like the rules (file, line and field on any defect) and reloaded without a
restart by :class:`RosterHolder` (a bad edit is rejected and the last good roster stays).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from onemap.datafiles import StrictModel, file_version, load_model
from onemap.errors import ConfigError
from onemap.levels import WarningLevel

log = logging.getLogger(__name__)

PHONE = re.compile(r"^\+?\d{5,15}$")

#: The four administrative levels, lowest first: an unacknowledged alert climbs this ladder.
AdminLevel = Literal["village", "town", "district", "city"]
ADMIN_LEVELS: tuple[AdminLevel, ...] = ("village", "town", "district", "city")
ADMIN_LEVEL_NAMES: dict[AdminLevel, str] = {"village": "村居", "town": "镇街",
                                            "district": "区", "city": "市"}


def admin_level_of(area_code: str) -> AdminLevel:
    """The level of an area code: 12 digits village, 9 town, 6 district, 6 ending 00 city.

    >>> [admin_level_of(c) for c in ("440404104001", "440404104", "440404", "440400")]
    ['village', 'town', 'district', 'city']
    """
    if len(area_code) == 12:
        return "village"
    if len(area_code) == 9:
        return "town"
    return "city" if area_code.endswith("00") else "district"


def normalize_phone(phone: str) -> str:
    """One form for comparing numbers: digits only, without China's country code.

    SMSCs report a sender as ``8613800000001`` or ``+86 138 0000 0001`` while the roster says
    ``13800000001``; full-width digits (typed on some handsets) count as digits.

    >>> normalize_phone("+86 138-0000-0001"), normalize_phone("8613800000001")
    ('13800000001', '13800000001')
    """
    digits = "".join(c for c in unicodedata.normalize("NFKC", phone) if c.isdigit())
    if len(digits) == 13 and digits.startswith("86"):
        return digits[2:]
    return digits


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Shift(StrictModel):
    """On duty on ``days`` from ``start`` to ``end`` (local time); an end before the start
    runs past midnight into the next day."""

    days: tuple[Day, ...] = DAYS
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        t = local.time().replace(tzinfo=None)
        day = DAYS[local.weekday()]
        if self.start <= self.end:
            return day in self.days and self.start <= t < self.end
        previous_day = DAYS[(local.weekday() - 1) % 7]
        return (day in self.days and t >= self.start) or \
            (previous_day in self.days and t < self.end)


class Officer(StrictModel):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    role: str = ""
    area_code: str = Field(pattern=r"^\d{6}(\d{3}(\d{3})?)?$")
    phone: str
    min_level: Literal["blue", "yellow", "orange", "red"] = "blue"
    hazard_types: tuple[str, ...] = ("all",)
    #: empty: always on duty
    shifts: tuple[Shift, ...] = ()
    #: who takes the officer's messages outside their shifts (an officer id in this roster)
    deputy: str | None = None

    def on_duty(self, local: datetime) -> bool:
        return not self.shifts or any(s.covers(local) for s in self.shifts)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        if not PHONE.match(value):
            raise ValueError("phone must be 5-15 digits, optionally starting with +")
        return value

    @property
    def threshold(self) -> WarningLevel:
        return WarningLevel.parse(self.min_level)

    def covers(self, hazard_type: str) -> bool:
        return "all" in self.hazard_types or hazard_type in self.hazard_types

    @property
    def admin_level(self) -> AdminLevel:
        return admin_level_of(self.area_code)


class EscalationStep(StrictModel):
    """For one warning colour: how long the people told have to acknowledge, and how far up
    an unacknowledged alert may climb."""

    #: minutes from the send (or the last escalation) to the next level up being told
    ack_within_min: int = Field(ge=1, le=24 * 60)
    #: the highest administrative level this colour escalates to
    up_to: Literal["town", "district", "city"] = "city"


class EscalationPolicy(StrictModel):
    """Per colour, the acknowledgement deadline and the top of the ladder (all four colours
    must be stated: a forgotten colour must not silently never escalate)."""

    blue: EscalationStep
    yellow: EscalationStep
    orange: EscalationStep
    red: EscalationStep
    #: whether drill alerts escalate too (only when the drill plan includes the chain of
    #: command above the drill's recipients)
    drills: bool = False

    def step(self, level: WarningLevel) -> EscalationStep | None:
        """The rule for a colour (None for ``NONE``: nothing to acknowledge)."""
        steps = {WarningLevel.BLUE: self.blue, WarningLevel.YELLOW: self.yellow,
                 WarningLevel.ORANGE: self.orange, WarningLevel.RED: self.red}
        return steps.get(level)


class DutyRoster(StrictModel):
    version: int = Field(ge=1)
    #: the roster's local time (China: +08:00, no daylight saving)
    utc_offset: str = Field(default="+08:00", pattern=r"^[+-]\d\d:\d\d$")
    officers: tuple[Officer, ...]
    #: absent: unacknowledged alerts do not escalate (see docs/sms-escalation.md)
    escalation: EscalationPolicy | None = None

    @model_validator(mode="after")
    def _unique_ids_and_known_deputies(self) -> DutyRoster:
        seen: set[str] = set()
        for officer in self.officers:
            if officer.id in seen:
                raise ValueError(f"officer id {officer.id!r} appears twice")
            seen.add(officer.id)
        for officer in self.officers:
            if officer.deputy is not None and (officer.deputy not in seen
                                               or officer.deputy == officer.id):
                raise ValueError(f"officer {officer.id!r}: deputy {officer.deputy!r} is not "
                                 "another officer of this roster")
        return self

    @property
    def tz(self) -> timezone:
        sign = -1 if self.utc_offset.startswith("-") else 1
        hours, minutes = int(self.utc_offset[1:3]), int(self.utc_offset[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))

    def by_id(self, officer_id: str) -> Officer:
        return next(o for o in self.officers if o.id == officer_id)

    def get(self, officer_id: str) -> Officer | None:
        return next((o for o in self.officers if o.id == officer_id), None)

    def by_phone(self, phone: str) -> Officer | None:
        """The officer with this number (any written form), or None."""
        wanted = normalize_phone(phone)
        return next((o for o in self.officers if normalize_phone(o.phone) == wanted), None)

    def on_duty_for(self, officer: Officer, when: datetime) -> Officer | None:
        """The officer if on duty at ``when``, else their deputy if on duty, else None."""
        local = when.astimezone(self.tz)
        if officer.on_duty(local):
            return officer
        if officer.deputy is not None:
            deputy = self.by_id(officer.deputy)
            if deputy.on_duty(local):
                return deputy
        return None


def load_roster(path: Path) -> DutyRoster:
    return load_model(DutyRoster, path)


class RosterHolder:
    """Holds the roster in force and swaps it when the file changes and validates.

    Why a holder rather than reloading on every send: validation costs milliseconds and the
    file changes a few times a day; a cheap stat per check finds the edit. A bad edit is
    logged with file, line and field and the last good roster stays in force, so a typo in a
    phone number at 3 a.m. never stops warnings going out. ``current`` is what the SMS sink
    and the escalation read (``SmsSink(roster=lambda: holder.current)``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current = load_roster(path)
        self.version = file_version(path)
        self._stamp = self._fingerprint()
        self.last_error: ConfigError | None = None

    def _fingerprint(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def maybe_reload(self) -> str | None:
        """Reload if the file changed: "reloaded", "rejected" or None (no change). The caller
        counts the outcome in a metric (``onemap_roster_reloads_total``)."""
        try:
            stamp = self._fingerprint()
        except OSError:
            return None  # mid-rename by an editor: look again next time
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            roster = load_roster(self.path)
            version = file_version(self.path)
        except ConfigError as exc:
            self.last_error = exc
            log.error("duty roster rejected, keeping version %s: %s", self.version, exc)
            return "rejected"
        except OSError:
            return None
        self.last_error = None
        if version == self.version:
            return None
        log.warning("duty roster reloaded: version %s -> %s (%d officers)", self.version,
                    version, len(roster.officers))
        self.current, self.version = roster, version
        return "reloaded"


def masked(phone: str) -> str:
    """A phone number fit for logs: 138****0001."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"
