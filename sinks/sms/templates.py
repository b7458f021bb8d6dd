"""Chinese SMS text per hazard type and transition, and the real length limits of an SMS.

One UCS-2 segment holds 70 characters; concatenated messages hold 67 per part.
"""

from __future__ import annotations

import dataclasses

from onemap.records import Alert

SENDER_TAG = "【珠海应急】"
DRILL_TAG = "【演练】"
SINGLE_SEGMENT = 70
CONCAT_SEGMENT = 67

#: What to do, per hazard type and colour (from the defence guidelines of each signal).
ACTIONS: dict[str, dict[str, str]] = {
    "water_level": {"blue": "请密切关注水情", "yellow": "请加强巡查防守",
                    "orange": "请组织抢险准备", "red": "请立即组织转移"},
    "rainstorm": {"blue": "请做好防御准备", "yellow": "请做好防汛排涝",
                  "orange": "请做好人员转移准备", "red": "请立即转移危险区域人员"},
    "wind": {"blue": "请加固临时设施", "yellow": "请停止户外高空作业",
             "orange": "请组织船只回港避风", "red": "请立即就地避险"},
    "geohazard": {"blue": "请加密巡查", "yellow": "请做好撤离准备",
                  "orange": "请组织受威胁群众撤离", "red": "请立即撤离受威胁群众"},
    "incident": {"blue": "请核实处置", "yellow": "请立即赶赴现场",
                 "orange": "请启动应急响应", "red": "请立即启动应急响应"},
    "sensor_silent": {"yellow": "请立即派员核查设备", "orange": "请立即派员核查并人工监测"},
    "cap_warning": {"blue": "请做好防御准备", "yellow": "请落实防御措施",
                    "orange": "请启动相应应急响应", "red": "请启动最高级别应急响应"},
}
DEFAULT_ACTION = "请立即核实处置"
HAZARD_NAMES = {"water_level": "", "rainstorm": "暴雨", "wind": "台风大风",
                "geohazard": "地质灾害", "incident": "突发事件", "sensor_silent": "监测中断",
                "cap_warning": ""}


def _figure(alert: Alert) -> str:
    f = alert.hazard.key_figure
    if alert.hazard.hazard_type == "water_level":
        text = f"{f.name}{f.value:.2f}{f.unit}"
        if f.threshold is not None:
            delta = f.value - f.threshold
            text += f"超{f.threshold_name}{delta:.2f}{f.unit}" if delta >= 0.005 else \
                f"({f.threshold_name}{f.threshold:.2f}{f.unit})"
        return text
    return f"{f.name}{f.value:g}{f.unit}"


def render(alert: Alert) -> str:
    """The SMS text for one alert transition.

    New/escalated: 【珠海应急】红色暴雨预警 <place> <source> <figure> <action> 回复1确认
    """
    h = alert.hazard
    where = f"{h.place.label}{h.source_name}"
    kind = HAZARD_NAMES.get(h.hazard_type, "")
    if alert.transition == "resolved":
        body = f"解除{alert.previous_level.chinese}{kind}预警 {where} {_figure(alert)}"
    elif alert.transition == "de-escalated":
        body = (f"{alert.previous_level.chinese}降为{alert.level.chinese}{kind}预警 {where} "
                f"{_figure(alert)}")
    else:
        verb = "升级为" if alert.transition == "escalated" else ""
        action = ACTIONS.get(h.hazard_type, {}).get(alert.level.label, DEFAULT_ACTION)
        body = (f"{verb}{alert.level.chinese}{kind}预警 {where} {_figure(alert)} "
                f"{action} 回复1确认")
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


# --- grouped summary (digest) -------------------------------------------------------------

#: What a summary calls a hazard type when every message in it is of that type.
DIGEST_KINDS = {"water_level": "水情", "rainstorm": "暴雨", "wind": "台风大风",
                "geohazard": "地质灾害", "incident": "突发事件", "sensor_silent": "监测中断",
                "cap_warning": "气象"}
#: Count labels in the order a summary lists them: colours of new/escalated messages, then
#: the downward transitions.
DIGEST_COUNT_LABELS = {"red": "红", "orange": "橙", "yellow": "黄", "blue": "蓝",
                       "de-escalated": "降级", "resolved": "解除"}
#: Why a held message is no longer current (a later transition of its hazard came first).
MOOT_LABELS = {"escalated": "已升级", "de-escalated": "已降级", "resolved": "已解除",
               "superseded": "已更新"}
DIGEST_TAIL = "，详见应急一张图"


@dataclasses.dataclass(frozen=True, slots=True)
class DigestSummary:
    """What one grouped summary says; built by ``onemap.sinks.sms.storm.summarise``.

    ``counts`` and ``moot`` are keyed by :data:`DIGEST_COUNT_LABELS` / :data:`MOOT_LABELS`
    keys; ``where`` names up front the one town (or district) every message is about;
    ``places`` are the most frequent places below it (towns of one district, else districts),
    most frequent first, and ``more_places`` says whether others were left out.
    """

    minutes: int
    total: int
    counts: dict[str, int]
    moot: dict[str, int]
    where: str = ""
    places: tuple[str, ...] = ()
    more_places: bool = False
    kind: str = ""
    exercise: bool = False


def max_chars(parts: int) -> int:
    """Characters that fit in ``parts`` UCS-2 parts.

    >>> max_chars(1), max_chars(2)
    (70, 134)
    """
    return SINGLE_SEGMENT if parts <= 1 else CONCAT_SEGMENT * parts


def render_digest(s: DigestSummary, parts: int = 1) -> str:
    """One grouped summary, fitted into ``parts`` SMS parts.

    The fullest form comes first; when it is too long, places are dropped one at a time, then
    the stale messages are counted in one figure, then the places and the pointer to the wall
    go. The shortest form is sent even if too long (it only grows with many-digit counts).

    >>> s = DigestSummary(minutes=30, total=12, counts={"orange": 3, "yellow": 9}, moot={},
    ...                   places=("香洲区", "金湾区"), more_places=True)
    >>> render_digest(s)
    '【珠海应急】近30分钟另有12条预警：橙3 黄9，涉及香洲区、金湾区等，详见应急一张图'
    >>> one_town = DigestSummary(minutes=12, total=4, kind="台风大风", where="金湾区平沙镇",
    ...     counts={"orange": 1, "yellow": 2, "resolved": 1}, moot={"escalated": 1},
    ...     exercise=True)
    >>> text = render_digest(one_town)
    >>> head, body = text.split("：")
    >>> head
    '【演练】【珠海应急】近12分钟金湾区平沙镇另有4条台风大风预警'
    >>> body
    '橙1 黄2 解除1（其中1条已升级），详见应急一张图'
    >>> len(text) <= 70
    True
    """
    limit = max_chars(parts)
    prefix = (DRILL_TAG + SENDER_TAG) if s.exercise else SENDER_TAG
    counts = " ".join(f"{DIGEST_COUNT_LABELS[k]}{s.counts[k]}" for k in DIGEST_COUNT_LABELS
                      if s.counts.get(k))
    head = f"{prefix}近{s.minutes}分钟{s.where}另有{s.total}条{s.kind}预警：{counts}"
    stale = sum(s.moot.values())
    detailed = "、".join(f"{n}条{MOOT_LABELS[k]}" for k, n in s.moot.items() if n)
    moot_forms = [f"（其中{detailed}）", f"（其中{stale}条已过时）"] if stale else [""]
    candidates: list[str] = []
    for moot in moot_forms:
        for shown in range(len(s.places), 0, -1):
            etc = "等" if s.more_places or shown < len(s.places) else ""
            candidates.append(f"{head}{moot}，涉及{'、'.join(s.places[:shown])}{etc}"
                              f"{DIGEST_TAIL}")
        candidates.append(f"{head}{moot}{DIGEST_TAIL}")
    candidates.append(f"{head}{moot_forms[-1]}")
    for text in candidates:
        if len(text) <= limit:
            return text
    return candidates[-1]
