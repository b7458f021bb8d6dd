"""Chinese SMS text per hazard type and transition, and the real length limits of an SMS.

One UCS-2 segment holds 70 characters; concatenated messages hold 67 per part.
"""

from __future__ import annotations

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
