"""The command room's closed loop on an alert: acknowledged → dispatched → on scene → handled
→ closed, every step timed and recorded with who took it and through what (API or SMS).

Why a pure module: the wall's API and the SMS reply handler both record steps, and the
escalation of unacknowledged alerts reads them; the rule of which step may follow which is
one decision, taken here and tested directly. The Redis store is ``onemap.sinks.response``.

The rule: steps go forward in :data:`STEPS` order. A step may be skipped, except that the
first must be ``acknowledged`` (nobody dispatches an alert nobody has read); ``closed``
needs feedback (what happened). Repeating the step already reached is harmless (``already``),
going back is refused. An escalation of the alert (a higher level, a later ``seq``) asks for
a fresh acknowledgement: :func:`acknowledged` compares the acknowledged sequence number.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)
>>> loop, why = apply_step(Loop(), Step("acknowledged", "duty-city", "api", t, seq=1))
>>> why, loop.current
('accepted', 'acknowledged')
>>> apply_step(loop, Step("closed", "duty-city", "api", t))[1]
'closed needs feedback'
>>> apply_step(Loop(), Step("dispatched", "duty-city", "api", t, unit="消防一中队"))[1]
'acknowledge first'
>>> acknowledged(loop, seq=1), acknowledged(loop, seq=2)
(True, False)
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Final, Literal

#: The steps in order; an alert's loop only moves forward through them.
STEPS: Final = ("acknowledged", "dispatched", "on_scene", "handled", "closed")
#: Chinese labels for the wall and SMS replies.
STEP_LABELS: Final = {"acknowledged": "已确认", "dispatched": "已派遣", "on_scene": "已到场",
                      "handled": "已处置", "closed": "已办结"}
Via = Literal["api", "sms"]
MAX_TEXT: Final = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step taken on an alert."""

    step: str
    actor: str  # who: an operator name, a roster officer id or a phone number
    via: str  # "api" or "sms"
    at: datetime
    #: the alert transition the actor saw (acknowledging seq 3 does not acknowledge seq 4)
    seq: int = 0
    unit: str = ""  # dispatched: to which unit or person
    note: str = ""  # free text; for "closed" the feedback

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "actor": self.actor, "via": self.via,
                "at": self.at.isoformat(), "seq": self.seq, "unit": self.unit,
                "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(step=d["step"], actor=d["actor"], via=d["via"],
                   at=datetime.fromisoformat(d["at"]), seq=int(d.get("seq", 0)),
                   unit=d.get("unit", ""), note=d.get("note", ""))


@dataclasses.dataclass(frozen=True, slots=True)
class Loop:
    """Every step taken on one alert, oldest first."""

    steps: tuple[Step, ...] = ()

    @property
    def current(self) -> str | None:
        return self.steps[-1].step if self.steps else None

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Loop:
        return cls(tuple(Step.from_dict(s) for s in d.get("steps", [])))


def malformed(step: Step) -> str | None:
    """What is wrong with the step itself, whatever the loop (None: nothing)."""
    problems = (
        (step.step not in STEPS, f"unknown step {step.step!r}; expected one of {', '.join(STEPS)}"),
        (step.via not in ("api", "sms"), f"unknown channel {step.via!r}"),
        (not step.actor.strip(), "who took the step is required"),
        (len(step.note) > MAX_TEXT or len(step.unit) > MAX_TEXT,
         f"text longer than {MAX_TEXT} characters"),
        (step.at.tzinfo is None, "the step's time must carry its timezone"),
        (step.step == "dispatched" and not step.unit.strip(),
         "dispatched needs the unit or person sent"),
        (step.step == "closed" and not step.note.strip(), "closed needs feedback"),
    )
    return next((why for bad, why in problems if bad), None)


def check_step(loop: Loop, step: Step) -> str:
    """Why ``step`` may or may not follow ``loop``: 'accepted', 'already', or the refusal."""
    problem = malformed(step)
    if problem is not None:
        return problem
    wanted = STEPS.index(step.step)
    if loop.current is None:
        return "accepted" if step.step == "acknowledged" else "acknowledge first"
    reached = STEPS.index(loop.current)
    if wanted == reached:
        # acknowledging a later transition (after an escalation) is news; else a repeat
        later_ack = step.step == "acknowledged" and step.seq > loop.steps[-1].seq
        return "accepted" if later_ack else "already"
    if wanted < reached:
        return f"already {loop.current}; steps only go forward"
    return "accepted"


def apply_step(loop: Loop, step: Step) -> tuple[Loop, str]:
    """The loop after ``step`` and the reason (:func:`check_step`); unchanged unless accepted."""
    why = check_step(loop, step)
    if why != "accepted":
        return loop, why
    return Loop((*loop.steps, step)), why


def acknowledged(loop: Loop, seq: int) -> bool:
    """Whether someone acknowledged the alert at transition ``seq`` or later (any step past
    acknowledgement counts: a unit on scene has read the alert)."""
    return any(s.seq >= seq for s in loop.steps)


def step_times(loop: Loop, issued_at: datetime) -> dict[str, float]:
    """Seconds from the alert's issue to each step taken (for the wall and metrics).

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)
    >>> loop = Loop((Step("acknowledged", "a", "sms", t + timedelta(seconds=90), 1),))
    >>> step_times(loop, t)
    {'acknowledged': 90.0}
    """
    out: dict[str, float] = {}
    for s in loop.steps:
        out.setdefault(s.step, (s.at - issued_at).total_seconds())
    return out
