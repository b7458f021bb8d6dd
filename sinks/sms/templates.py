"""Chinese SMS text per transition, and the real length limits of an SMS.

One UCS-2 segment holds 70 characters; concatenated messages hold 67 per part.
"""

from __future__ import annotations

from onemap.records import Alert

SENDER_TAG = "【珠海应急】"
DRILL_TAG = "【演练】"
SINGLE_SEGMENT = 70
CONCAT_SEGMENT = 67

ACTIONS = {
    "blue": "请密切关注水情",
    "yellow": "请加强巡查防守",
    "orange": "请组织抢险准备",
    "red": "请立即组织转移",
}


def _figure(alert: Alert) -> str:
    f = alert.hazard.key_figure
    text = f"{f.name}{f.value:.2f}{f.unit}"
    if f.threshold is not None:
        delta = f.value - f.threshold
        text += f"超{f.threshold_name}{delta:.2f}{f.unit}" if delta >= 0 else \
            f"({f.threshold_name}{f.threshold:.2f}{f.unit})"
    return text


def render(alert: Alert) -> str:
    """The SMS text for one alert transition.

    New/escalated: 【珠海应急】红色预警 <place> <source> <figure> <action> 回复1确认
    """
    h = alert.hazard
    where = f"{h.place.label}{h.source_name}"
    if alert.transition == "resolved":
        body = f"解除{alert.previous_level.chinese}预警 {where} {_figure(alert)}"
    elif alert.transition == "de-escalated":
        body = (f"{alert.previous_level.chinese}降为{alert.level.chinese}预警 {where} "
                f"{_figure(alert)}")
    else:
        verb = "升级为" if alert.transition == "escalated" else ""
        body = (f"{verb}{alert.level.chinese}预警 {where} {_figure(alert)} "
                f"{ACTIONS[alert.level.label]} 回复1确认")
    prefix = DRILL_TAG + SENDER_TAG if h.exercise else SENDER_TAG
    return prefix + body


def segments(text: str) -> list[str]:
    """Split into SMS parts: one part up to 70 characters, else parts of 67, in order.

    >>> len(segments("啊" * 70)), len(segments("啊" * 71)), [len(p) for p in segments("啊" * 140)]
    (1, 2, [67, 67, 6])
    """
    if len(text) <= SINGLE_SEGMENT:
        return [text]
    return [text[i:i + CONCAT_SEGMENT] for i in range(0, len(text), CONCAT_SEGMENT)]
