"""Generators of CAP 1.2 messages: valid ones in legal variations, mutated, hostile, junk.

A valid message is built from parts (:class:`CapParts`), so a mutation can change one part's
text (a time, a polygon, an identifier) or the structure (drop, repeat or move an element,
change a namespace) and still know what it changed. Hostile XML is the usual attack set: DTDs,
entities (billion laughs, XXE to file and http), parameter entities, XInclude, schema-location
hints, deep nesting, huge and numerous attributes, other encodings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from random import Random
from xml.sax.saxutils import escape

from onemap.levels import WarningLevel
from onemap.streams.feeds.base import Reading
from onemap.streams.feeds.cap import CAP_NS, EXAMPLE, SEVERITY_LEVEL, format_cap_time
from tests.fuzz.strategies import (
    NUMBERS,
    STRINGS,
    TEXT_POOL,
    TIMES,
    Case,
    Check,
    damage,
    random_bytes,
    text,
    token_soup,
)

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "cap"
BASES: list[bytes] = [EXAMPLE] + [p.read_bytes() for p in sorted(REFERENCE.rglob("*.xml"))
                                  if p.stat().st_size < 30_000]
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
TOKEN_POOL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz0123456789-_.@:/"
#: Zhuhai codes on the shipped map (district, town, village) and codes that are not on it.
GEOCODES = ("440402", "440403", "440404", "440402001", "440402002", "440402001001",
            "110101", "999999", "440402999")


@dataclasses.dataclass
class CapParts:
    """A CAP message as ordered (tag, text or children) parts; ``render`` writes the XML."""

    alert: list[tuple[str, object]]
    prefix: str = ""
    namespace: str = CAP_NS

    def render(self, rnd: Random, *, decorate: bool = False) -> bytes:
        p = f"{self.prefix}:" if self.prefix else ""
        xmlns = f'xmlns{":" + self.prefix if self.prefix else ""}="{self.namespace}"'

        def write(parts: list[tuple[str, object]], depth: int) -> str:
            out = []
            pad = "\n" + "  " * depth
            for tag, value in parts:
                if isinstance(value, list):
                    inner = write(value, depth + 1)
                    out.append(f"{pad}<{p}{tag}>{inner}{pad}</{p}{tag}>")
                else:
                    body = str(value)
                    if decorate and tag in ("headline", "description", "areaDesc") \
                            and rnd.random() < 0.5:
                        body = f"<![CDATA[{body}]]>"
                    else:
                        body = escape(body)
                    out.append(f"{pad}<{p}{tag}>{body}</{p}{tag}>")
                if decorate and rnd.random() < 0.05:
                    out.append(f"{pad}<!-- {text(rnd, 10, 'abc 水')} -->")
            return "".join(out)

        doc = f"<{p}alert {xmlns}>{write(self.alert, 1)}\n</{p}alert>"
        head = ""
        if not decorate or rnd.random() < 0.7:
            head = rnd.choice(['<?xml version="1.0" encoding="UTF-8"?>\n',
                               '<?xml version="1.0" encoding="utf-8"?>\n',
                               "<?xml version='1.0'?>\n", '<?xml version="1.0" ?>']) \
                if decorate else '<?xml version="1.0" encoding="UTF-8"?>\n'
        raw = (head + doc).encode()
        if decorate and rnd.random() < 0.1:
            raw = b"\xef\xbb\xbf" + raw
        return raw


def token(rnd: Random, high: int = 40) -> str:
    return "".join(rnd.choice(TOKEN_POOL) for _ in range(rnd.randint(1, high)))


def cap_time(rnd: Random) -> tuple[str, datetime]:
    tz = timezone(timedelta(minutes=rnd.choice([480, 0, -420, 330, 840, -720])))
    when = datetime(1990, 1, 1, tzinfo=tz) + timedelta(seconds=rnd.randint(0, 50 * 365 * 86400))
    return format_cap_time(when), when


def _polygon(rnd: Random) -> tuple[str, float, float, float, float]:
    """A valid closed rectangle-ish ring in CAP's lat,lon order, and its lon/lat bounds."""
    lon = rnd.uniform(-179.0, 178.0)
    lat = rnd.uniform(-89.0, 88.0)
    w, h = rnd.uniform(0.001, 1.0), rnd.uniform(0.001, 1.0)
    ring = [(lat, lon), (lat + h, lon), (lat + h, lon + w), (lat, lon + w), (lat, lon)]
    if rnd.random() < 0.3:  # Zhuhai, so the ingest stage finds it on the map
        lon, lat, w, h = 113.3, 22.0, rnd.uniform(0.01, 0.5), rnd.uniform(0.01, 0.3)
        ring = [(lat, lon), (lat + h, lon), (lat + h, lon + w), (lat, lon + w), (lat, lon)]
    return " ".join(f"{a},{b}" for a, b in ring), lon, lat, lon + w, lat + h


def valid_parts(rnd: Random) -> tuple[CapParts, Check]:
    """A valid message and the check its Reading must pass."""
    identifier, sender = token(rnd), token(rnd, 20)
    sent_text, sent = cap_time(rnd)
    status = rnd.choice(["Actual", "Actual", "Exercise", "Test"])
    msg_type = rnd.choice(["Alert", "Alert", "Update", "Cancel"])
    alert: list[tuple[str, object]] = [
        ("identifier", identifier), ("sender", sender), ("sent", sent_text),
        ("status", status), ("msgType", msg_type), ("scope", "Public")]
    lineage = identifier
    if msg_type != "Alert":
        first = token(rnd)
        lineage = first
        refs = [f"{sender},{first},{cap_time(rnd)[0]}"]
        refs += [f"{token(rnd, 10)},{token(rnd)},{cap_time(rnd)[0]}"
                 for _ in range(rnd.randint(0, 2))]
        alert.append(("references", " ".join(refs)))
    severities = []
    where: tuple[float, float, float, float] | None = None  # lon/lat bounds of the position
    for _ in range(rnd.choice([1, 1, 2])):
        severity = rnd.choice(SEVERITIES)
        severities.append(severity)
        info: list[tuple[str, object]] = [
            ("language", "zh-CN"), ("category", "Met"),
            ("event", rnd.choice(["Flood", "暴雨", "Typhoon 台风", text(rnd, 20, TOKEN_POOL)
                                  or "Storm"])),
            ("urgency", rnd.choice(URGENCIES)), ("severity", severity),
            ("certainty", rnd.choice(CERTAINTIES))]
        if rnd.random() < 0.5:
            info.append(("expires", cap_time(rnd)[0]))
        if rnd.random() < 0.5:
            info.append(("headline", text(rnd, 60, TEXT_POOL.replace("\x00", "")
                                          .replace("\x07", "").replace("\x1b", "")
                                          .replace("\x7f", "").replace("\ufffe", ""))))
        area: list[tuple[str, object]] = [("areaDesc", rnd.choice(["珠海市", "Area 1", "x"]))]
        shape = rnd.choice(["polygon", "circle", "geocode"])
        if shape == "polygon":
            ring, x0, y0, x1, y1 = _polygon(rnd)
            area.append(("polygon", ring))
            if where is None:
                where = (x0, y0, x1, y1)
        elif shape == "circle":
            lat, lon = rnd.uniform(-90, 90), rnd.uniform(-180, 180)
            area.append(("circle", f"{lat},{lon} {rnd.choice([0, 0.5, 10, 250])}"))
            if where is None:
                where = (lon, lat, lon, lat)
        area.append(("geocode", [("valueName", "GB2260"), ("value", rnd.choice(GEOCODES))]))
        info.append(("area", area))
        alert.append(("info", info))
    parts = CapParts(alert, prefix=rnd.choice(["", "", "cap", "c"]))

    def check(r: Reading) -> None:
        assert (r.feed, r.source_id, r.observed_at) == ("cap", lineage[:200], sent), r
        assert r.exercise == (status in ("Exercise", "Test")), r
        level = WarningLevel.NONE if msg_type == "Cancel" else max(
            SEVERITY_LEVEL[s] for s in severities)
        assert r.values == {"level": float(level)}, (r.values, severities, msg_type)
        if where is None:
            assert r.lon is None and r.attrs["area_codes"], r
        else:
            x0, y0, x1, y1 = where
            assert r.lon is not None and r.lat is not None
            assert x0 - 1e-9 <= r.lon <= x1 + 1e-9 and y0 - 1e-9 <= r.lat <= y1 + 1e-9, r
            assert r.attrs["area_wkt"].startswith("POLYGON"), r
    return parts, check



# --- mutations ---------------------------------------------------------------------------------

#: Text that CAP's schema or OneMap's checks must refuse (or survive) in some element.
CAP_TEXTS: list[str] = [
    "", " ", "2017-08-23T10:00:00", "2017-08-23T10:00:00Z", "2017-08-23T24:00:00+08:00",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2017-02-30T10:00:00+08:00",
    "2017-08-23T10:00:00+99:99", "2017-08-23T10:00:00-00:00", "1e5", "nan", "inf", "-0",
    "9" * 400, "9" * 5000, "0." + "0" * 400 + "1", "22.2,113.5 22.3,113.5 22.2,113.5",
    "22.2,113.5 22.3,113.5 22.3,113.6 22.2,113.6", "113.5,22.2 113.5,22.3 113.6,22.3 113.5,22.2",
    "22.2,113.5 22.3,113.5 22.2,113.6 22.3,113.6 22.2,113.5", "1,1 1,1 1,1 1,1",
    "nan,nan nan,nan nan,nan nan,nan", "91,0 0,0 0,1 91,0", "22.2,113.5 " + "9" * 400 + ",1",
    "22.2,113.5", "22.2,113.5 -1", "22.2,113.5 1e3", "22.2,113.5 " + "9" * 400,
    "22.2 113.5 10", "22.2,113.5,0 10", "a b", "a,b", "a,b,c d,e,f", "x,y,2017-08-23T10:00:00",
    "s,i,2017-08-23T10:00:00+08:00 s,i", "Actual ", "actual", "ALERT", "Public\x00", "Met",
    "Immediate", "Extreme", "Unknown", "red", "红色", "暴雨红色预警信号", "<", "&", "]]>",
    "\u2028", "\ufeff", "水" * 3000, "x" * 200_000, "-1", "1" * 20, "image/png",
]


def text_substituted(rnd: Random) -> Case:
    """A valid message with one element's text replaced by nasty text (escaped as XML)."""
    parts, _ = valid_parts(rnd)
    targets: list[list[tuple[str, object]]] = [parts.alert]
    stack = [parts.alert]
    while stack:
        for _, value in stack.pop():
            if isinstance(value, list):
                targets.append(value)
                stack.append(value)
    container = rnd.choice(targets)
    leaves = [i for i, (_, v) in enumerate(container) if not isinstance(v, list)]
    if leaves:
        i = rnd.choice(leaves)
        roll = rnd.random()
        new = (rnd.choice(CAP_TEXTS) if roll < 0.6 else rnd.choice(STRINGS + TIMES) if roll < 0.8
               else str(rnd.choice(NUMBERS)) if roll < 0.9 else _scribble(rnd))
        new = "".join(c for c in new if c.isprintable() or c in " \n\t")
        container[i] = (container[i][0], new)
    return Case(parts.render(rnd), "text")


def _scribble(rnd: Random) -> str:
    """A self-intersecting ring of random points (a scribble): costly to repair."""
    points = [f"{rnd.uniform(22, 23):.5f},{rnd.uniform(113, 114):.5f}"
              for _ in range(rnd.randint(4, 40))]
    return " ".join([*points, points[0]])


def structural(rnd: Random) -> Case:
    """A valid message with elements dropped, repeated, moved, renamed or re-namespaced."""
    parts, _ = valid_parts(rnd)
    for _ in range(rnd.randint(1, 3)):
        container = parts.alert
        if rnd.random() < 0.5:
            infos = [v for t, v in parts.alert if t == "info" and isinstance(v, list)]
            if infos:
                container = rnd.choice(infos)
        if not container:
            continue
        i = rnd.randrange(len(container))
        op = rnd.randrange(5)
        if op == 0:
            del container[i]
        elif op == 1:
            container.insert(i, container[i])
        elif op == 2:
            container.insert(rnd.randrange(len(container)), container.pop(i))
        elif op == 3:
            container[i] = (rnd.choice(["Identifier", "foo", "info", "area", "polygon", "x:y",
                                        "Signature"]), container[i][1])
        else:
            parts.namespace = rnd.choice([
                "urn:oasis:names:tc:emergency:cap:1.1", "urn:oasis:names:tc:emergency:cap:1.0",
                "", "http://www.w3.org/2000/09/xmldsig#", CAP_NS + " ", CAP_NS.upper()])
    return Case(parts.render(rnd), "structure")


DTD_ATTACKS: list[str] = [
    '<!DOCTYPE alert [<!ENTITY a "{a}">]>',
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>',
    '<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE alert [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]>',
    '<!DOCTYPE alert [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
    '<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">',
    '<!DOCTYPE alert PUBLIC "-//X//DTD X//EN" "file:///etc/shadow">',
    "<!DOCTYPE alert>",
    '<!DOCTYPE alert [<!ATTLIST alert xmlns CDATA "urn:x">]>',
]


def hostile(rnd: Random) -> Case:
    """Attacks on the XML layer around an otherwise valid message."""
    parts, _ = valid_parts(rnd)
    doc = parts.render(rnd).decode()
    body = doc[doc.index("<", 1):] if doc.startswith("<?xml") else doc
    roll = rnd.randrange(10)
    if roll <= 2:  # a DTD: entities, external references
        dtd = rnd.choice(DTD_ATTACKS).replace("{a}", "&#x26;" * rnd.randint(0, 5))
        ref = rnd.choice(["&xxe;", "&lol3;", "&a;", ""])
        body = body.replace("<scope>Public", f"<scope>Public{ref}", 1)
        out = f'<?xml version="1.0" encoding="UTF-8"?>\n{dtd}\n{body}'
    elif roll == 3:  # XInclude and schema-location hints: never processed, never fetched
        hint = rnd.choice([
            '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            'href="file:///etc/passwd" parse="text"/>',
            '<note xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="urn:x http://127.0.0.1:9/x.xsd">n</note>'])
        out = body.replace("</scope>", "</scope>" + hint, 1)
    elif roll == 4:  # deep nesting
        depth = rnd.choice([31, 33, 100, 5000, 50_000])
        out = body.replace("</scope>", "</scope><note>" + "<a>" * depth + "</a>" * depth
                           + "</note>", 1)
    elif roll == 5:  # a huge attribute, or very many
        if rnd.random() < 0.5:
            attrs = f'a="{"x" * rnd.choice([10, 100_000, 1_100_000])}"'
        else:
            attrs = " ".join(f'a{i}="1"' for i in range(rnd.choice([2, 1000, 20_000])))
        out = body.replace(" xmlns", f" {attrs} xmlns", 1)
    elif roll == 6:  # another encoding, declared or not
        enc = rnd.choice(["utf-16", "utf-16-le", "gbk", "latin-1", "utf-32"])
        decl = rnd.choice([f'<?xml version="1.0" encoding="{enc}"?>', ""])
        out_bytes = (decl + body).encode(enc, "replace")
        return Case(out_bytes, "hostile")
    elif roll == 7:  # processing instructions, comments, CDATA in odd places
        extra = rnd.choice(["<?php system('id'); ?>", "<!-- -- -->", "<![CDATA[<alert/>]]>",
                            "<?xml-stylesheet href='http://127.0.0.1:9/x.xsl'?>"])
        at = rnd.randrange(len(body))
        out = body[:at] + extra + body[at:]
    elif roll == 8:  # character references to forbidden and odd characters
        ref = rnd.choice(["&#0;", "&#x1;", "&#xD800;", "&#xFFFE;", "&#x110000;", "&#9999999999;",
                          "&#x85;", "&#x2028;", "&lt;", "&unknown;", "&#;"])
        out = body.replace("<sender>", "<sender>" + ref, 1)
    else:  # the message over the size limit, or just under it
        size = rnd.choice([1024 * 1024 - len(body) - 20, 1024 * 1024 + 1])
        out = body.replace("</alert>", "<!--" + "x" * max(size, 0) + "--></alert>")
        out = out[out.index("<"):]
    return Case(out.encode(), "hostile")


XML_TOKENS: list[bytes] = [
    b"<", b">", b"/", b"</", b"<alert>", b"</alert>", b'<alert xmlns="' + CAP_NS.encode() + b'">',
    b"<info>", b"</info>", b"<area>", b"</area>", b"<polygon>", b"</polygon>", b"<sent>",
    b"</sent>", b"2017-08-23T10:00:00+08:00", b"&amp;", b"&x;", b"<!DOCTYPE a>", b"<![CDATA[",
    b"]]>", b'<?xml version="1.0"?>', b"<!--", b"-->", b"22.2,113.5", b" ", b"\n", b'"', b"=",
    b"xmlns", b"\xff", b"\x00", b"\xe6\xb0\xb4", b"<identifier>", b"</identifier>",
]


def _damaged(rnd: Random) -> Case:
    raw = rnd.choice(BASES) if rnd.random() < 0.5 else valid_parts(rnd)[0].render(rnd)
    for _ in range(rnd.randint(1, 4)):
        raw = damage(rnd, raw)
    return Case(raw, "damaged")


def _valid(rnd: Random) -> Case:
    parts, check = valid_parts(rnd)
    return Case(parts.render(rnd, decorate=True), "valid", "accept", check)


#: (share, generator): junk 15%, byte-damaged 20%, text 25%, structure 12%, hostile 13%,
#: valid variants 15%.
CAP_MIX: list[tuple[float, Callable[[Random], Case]]] = [
    (0.08, random_bytes), (0.07, lambda rnd: Case(token_soup(rnd, XML_TOKENS, 60), "soup")),
    (0.20, _damaged), (0.25, text_substituted), (0.12, structural), (0.13, hostile),
    (0.15, _valid),
]


def cap_case(rnd: Random) -> Case:
    """One input of the CAP mix (:data:`CAP_MIX`)."""
    roll = rnd.random()
    for share, gen in CAP_MIX:
        if roll < share:
            return gen(rnd)
        roll -= share
    return _valid(rnd)
