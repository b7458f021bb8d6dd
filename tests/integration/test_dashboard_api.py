"""The wall's acting API against a real redis-server: operator auth (viewer vs operator,
missing / bad tokens, CSRF), bad requests, every accepted and refused closed-loop step,
concurrent steps, silences, the area top lists, and Redis down → 503.

The dashboard app runs in this process (aiohttp on a loopback port, in a thread of its own)
with an injected clock, so step times are exact; alerts are written with the worker's own
writer (tests/browser/kit.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web

from onemap.embedded import free_port, start_redis, stop
from onemap.errors import ConfigError
from onemap.levels import WarningLevel
from onemap.sinks.dashboard.auth import COOKIE, OperatorAuth, TokenAuth, token_sha256
from onemap.sinks.dashboard.server import make_app
from onemap.sinks.response import response_key
from onemap.sinks.silences import SILENCES_KEY
from tests.browser import kit

pytestmark = pytest.mark.integration

VIEWER = "viewer-token-for-the-kiosk-0001"
ALICE = "alice-operator-token-0123456789"
BOB = "bob-operator-token-9876543210ab"
VICTOR = "victor-named-viewer-token-4242"
T0 = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)


def operators_yaml(*entries: tuple[str, str, str]) -> str:
    lines = ["version: 1", "operators:"]
    for name, role, token in entries:
        lines += [f"  - name: {name}", f"    role: {role}",
                  f"    token_sha256: {token_sha256(token)}"]
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclasses.dataclass
class Server:
    url: str
    clock: Clock
    stop: Callable[[], None]
    redis_url: str

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> Answer:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = orjson.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=hdrs)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, payload, got = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as err:
            status, payload, got = err.code, err.read(), dict(err.headers)
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            parsed = payload
        return Answer(status, parsed, got)

    def step(self, hazard_id: str, body: Any, token: str | None = ALICE, **kw: Any) -> Answer:
        return self.call("POST", f"/api/alerts/{hazard_id}/steps", body, token=token, **kw)


def serve(redis_url: str, operators: Path | None, *, token: str | None = VIEWER) -> Server:
    """Start the dashboard app on a loopback port in a thread; returns once it answers."""
    clock = Clock()
    started = threading.Event()
    box: dict[str, Any] = {}
    port = free_port()

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        app = make_app(client, token=token, admin=kit.admin_map(), operators=operators,
                       clock=clock, flush_s=0.05)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        box["done"] = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        started.set()
        await box["done"].wait()
        await runner.cleanup()
        await client.aclose()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(60), "the dashboard app did not start"

    def halt() -> None:
        box["loop"].call_soon_threadsafe(box["done"].set)
        thread.join(10)

    return Server(f"http://127.0.0.1:{port}", clock, halt, redis_url)


@pytest.fixture(scope="module")
def ops_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ops") / "operators.yaml"
    path.write_text(operators_yaml(("张三", "operator", ALICE), ("李四", "operator", BOB),
                                   ("王五", "viewer", VICTOR)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(redis_url: str, ops_file: Path) -> Iterator[Server]:
    redis.Redis.from_url(redis_url).flushdb()
    running = serve(redis_url, ops_file)
    assert running.call("GET", "/api/areas", token=VIEWER).status == 200
    yield running
    running.stop()


def alert(sid: str, level: WarningLevel = WarningLevel.ORANGE, village: int = 5,
          **kw: Any) -> Any:
    return kit.make_alert(kit.villages()[village], level, source_id=sid, issued_at=T0, **kw)


def fresh(server: Server, sid: str, **kw: Any) -> str:
    """Write a new alert to Redis and return its hazard id."""
    a = alert(sid, **kw)
    kit.write_alerts(server.redis_url, [a])
    return a.hazard_id


# -- auth --------------------------------------------------------------------------------------


def test_only_an_operators_bearer_token_may_act(server: Server) -> None:
    hid = fresh(server, "AUTH-1")
    ack = {"step": "acknowledged"}
    assert server.step(hid, ack, token=None).status == 401
    assert server.step(hid, ack, token="not-a-token").status == 401
    viewer = server.step(hid, ack, token=VIEWER)
    assert viewer.status == 403 and "operator" in viewer.body["error"]
    assert server.step(hid, ack, token=VICTOR).status == 403  # named, but a viewer
    cookie = f"{COOKIE}={TokenAuth(VIEWER).cookie_value()}"
    assert server.step(hid, ack, token=None, headers={"Cookie": cookie}).status == 403
    # nothing was recorded by any of those
    assert server.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER).body["loop"][
        "steps"] == []
    ok = server.step(hid, ack)
    assert ok.status == 200 and ok.body["result"] == "accepted"
    assert ok.body["loop"]["steps"][0]["actor"] == "张三"
    assert ok.body["loop"]["steps"][0]["via"] == "api"
    # operator and named-viewer tokens may read, like the viewer token
    for token in (ALICE, VICTOR, VIEWER):
        assert server.call("GET", f"/api/alerts/{hid}/steps", token=token).status == 200
    assert server.call("GET", f"/api/alerts/{hid}/steps").status == 401


def test_whoami_names_the_token_holder(server: Server) -> None:
    assert server.call("GET", "/api/whoami", token=ALICE).body == {
        "name": "张三", "role": "operator", "may_act": True}
    assert server.call("GET", "/api/whoami", token=VICTOR).body == {
        "name": "王五", "role": "viewer", "may_act": False}
    assert server.call("GET", "/api/whoami", token=VIEWER).body["may_act"] is False
    assert server.call("GET", "/api/whoami", token="wrong").status == 401


def test_cross_site_writes_are_refused_before_anything_else(server: Server) -> None:
    hid = fresh(server, "CSRF-1")
    ack = {"step": "acknowledged"}
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        answer = server.step(hid, ack, headers=headers)
        assert answer.status == 403 and answer.body["error"] == "cross-origin write refused"
    # a form post (no preflight) cannot be JSON
    form = server.step(hid, None, raw=b"step=acknowledged",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    plain = server.step(hid, None, raw=b'{"step": "acknowledged"}',
                        headers={"Content-Type": "text/plain"})
    assert plain.status == 415
    assert server.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER).body["loop"][
        "current"] is None
    same_origin = server.step(hid, ack, headers={"Origin": server.url,
                                                  "Sec-Fetch-Site": "same-origin"})
    assert same_origin.status == 200


# -- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "raw", "why"), [
    (None, b"{not json", "the body is not valid JSON"),
    (None, b"", "the body is not valid JSON"),
    (["acknowledged"], None, "the body must be a JSON object"),
    ({"step": "acknowledged", "actor": "someone else"}, None,
     "unknown field(s) actor; expected note, seq, step, unit"),
    ({}, None, "step is required (a string)"),
    ({"step": 1}, None, "step is required (a string)"),
    ({"step": "approved"}, None,
     "unknown step 'approved'; expected one of acknowledged, dispatched, on_scene, handled, "
     "closed"),
    ({"step": "acknowledged", "seq": True}, None,
     "seq must be a whole number from 1 (the alert transition seen)"),
    ({"step": "acknowledged", "seq": "1"}, None,
     "seq must be a whole number from 1 (the alert transition seen)"),
    ({"step": "acknowledged", "seq": 0}, None,
     "seq must be a whole number from 1 (the alert transition seen)"),
    ({"step": "acknowledged", "seq": 2}, None,
     "seq 2 is later than the alert's latest transition (1)"),
    ({"step": "acknowledged", "note": 5}, None, "unit and note must be strings"),
    ({"step": "dispatched"}, None, "dispatched needs the unit or person sent"),
    ({"step": "dispatched", "unit": "   "}, None, "dispatched needs the unit or person sent"),
    ({"step": "closed"}, None, "closed needs feedback"),
    ({"step": "acknowledged", "note": "长" * 501}, None, "text longer than 500 characters"),
])
def test_malformed_steps_are_400_with_the_reason(server: Server, body: Any, raw: bytes | None,
                                                  why: str) -> None:
    hid = fresh(server, "BAD-1")
    headers = {"Content-Type": "application/json"} if raw is not None else None
    answer = server.step(hid, body, raw=raw, headers=headers)
    assert (answer.status, answer.body["error"]) == (400, why)


def test_an_oversized_body_is_413_and_an_unknown_hazard_404(server: Server) -> None:
    hid = fresh(server, "BIG-1")
    big = server.step(hid, {"step": "acknowledged", "note": "x" * 20_000})
    assert big.status == 413
    unknown = server.step("water_level:NO-SUCH", {"step": "acknowledged"})
    assert unknown.status == 404 and "no alert" in unknown.body["error"]
    assert server.call("GET", "/api/alerts/water_level:NO-SUCH/steps", token=VIEWER).status \
        == 404


# -- the closed loop ---------------------------------------------------------------------------


def test_every_step_accepted_or_refused_with_its_reason_and_timed(server: Server,
                                                                  redis_client: redis.Redis
                                                                  ) -> None:
    hid = fresh(server, "LOOP-1")
    t = server.clock

    def at(minutes: float, body: dict[str, Any], token: str = ALICE) -> Answer:
        t.now = T0 + timedelta(minutes=minutes)
        return server.step(hid, body, token=token)

    refused = at(1, {"step": "dispatched", "unit": "消防一中队"})
    assert (refused.status, refused.body["error"]) == (409, "acknowledge first")
    assert refused.body["loop"]["current"] is None
    for step in ("on_scene", "handled"):
        assert at(1, {"step": step}).body["error"] == "acknowledge first"

    ack = at(2, {"step": "acknowledged", "note": "收到"})
    assert (ack.status, ack.body["result"]) == (200, "accepted")
    again = at(3, {"step": "acknowledged"}, token=BOB)
    assert (again.status, again.body["result"]) == (200, "already")
    assert len(again.body["loop"]["steps"]) == 1

    assert at(5, {"step": "dispatched", "unit": "消防一中队"}).body["result"] == "accepted"
    assert at(20, {"step": "on_scene"}, token=BOB).body["result"] == "accepted"
    back = at(21, {"step": "dispatched", "unit": "二中队"})
    assert (back.status, back.body["error"]) == (409, "already on_scene; steps only go forward")
    back = at(21, {"step": "acknowledged"})
    assert back.status == 409
    # skipping "handled" is allowed; closing needs feedback (400 above), then closes
    closed = at(45, {"step": "closed", "note": "积水已排除，道路恢复通行"})
    assert closed.body["result"] == "accepted"
    after = at(46, {"step": "handled"})
    assert (after.status, after.body["error"]) == (409, "already closed; steps only go forward")

    loop = server.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER).body
    assert loop["alert_seq"] == 1 and loop["loop"]["current"] == "closed"
    assert [(s["step"], s["actor"], s["at"]) for s in loop["loop"]["steps"]] == [
        ("acknowledged", "张三", (T0 + timedelta(minutes=2)).isoformat()),
        ("dispatched", "张三", (T0 + timedelta(minutes=5)).isoformat()),
        ("on_scene", "李四", (T0 + timedelta(minutes=20)).isoformat()),
        ("closed", "张三", (T0 + timedelta(minutes=45)).isoformat())]
    assert loop["loop"]["times"] == {"acknowledged": 120.0, "dispatched": 300.0,
                                     "on_scene": 1200.0, "closed": 2700.0}
    assert loop["loop"]["steps"][1]["unit"] == "消防一中队"
    assert loop["loop"]["steps"][3]["note"] == "积水已排除，道路恢复通行"
    # the store the SMS replies and escalation read holds the same loop
    stored = orjson.loads(redis_client.get(response_key(hid)) or b"{}")
    assert [s["step"] for s in stored["steps"]] == ["acknowledged", "dispatched", "on_scene",
                                                    "closed"]


def test_an_escalation_asks_for_a_fresh_acknowledgement(server: Server) -> None:
    first = alert("ESC-1", WarningLevel.YELLOW)
    kit.write_alerts(server.redis_url, [first])
    assert server.step(first.hazard_id, {"step": "acknowledged"}).body["result"] == "accepted"
    up = kit.make_alert(kit.villages()[5], WarningLevel.RED, source_id="ESC-1", seq=2,
                        transition="escalated", issued_at=T0 + timedelta(minutes=30))
    kit.write_alerts(server.redis_url, [up])
    # no seq given: the operator acknowledges the transition now current (2)
    again = server.step(first.hazard_id, {"step": "acknowledged"})
    assert again.body["result"] == "accepted"
    assert [s["seq"] for s in again.body["loop"]["steps"]] == [1, 2]
    stale = server.step(first.hazard_id, {"step": "acknowledged", "seq": 1})
    assert stale.body["result"] == "already"


def test_concurrent_steps_record_exactly_one(server: Server) -> None:
    hid = fresh(server, "RACE-1")
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(
            lambda i: server.step(hid, {"step": "acknowledged"},
                                  token=ALICE if i % 2 else BOB), range(24)))
    assert all(a.status == 200 for a in answers), [a.body for a in answers]
    assert sorted(a.body["result"] for a in answers).count("accepted") == 1
    loop = server.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER).body["loop"]
    assert len(loop["steps"]) == 1
    # different steps at once: every one that the order allows lands, none is lost
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda body: server.step(hid, body), [
            {"step": "dispatched", "unit": "一中队"}, {"step": "on_scene"},
            {"step": "handled"}, {"step": "dispatched", "unit": "二中队"}]))
    loop = server.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER).body["loop"]
    accepted = [a for a in answers if a.body.get("result") == "accepted"]
    assert len(loop["steps"]) == 1 + len(accepted) >= 2
    names = [s["step"] for s in loop["steps"]]
    assert names == sorted(names, key=["acknowledged", "dispatched", "on_scene", "handled",
                                       "closed"].index)  # only ever forward
    assert all(a.status in (200, 409) for a in answers)


# -- silences ----------------------------------------------------------------------------------


def test_silences_are_set_listed_and_expired_by_operators(server: Server,
                                                         redis_client: redis.Redis) -> None:
    redis_client.delete(SILENCES_KEY)
    server.clock.now = T0
    body = {"matchers": {"area_code": "440402", "hazard_type": "wind"},
            "duration_minutes": 90, "comment": "风速仪检修"}
    assert server.call("POST", "/api/silences", body, token=VIEWER).status == 403
    assert server.call("POST", "/api/silences", body, token=VICTOR).status == 403
    assert server.call("POST", "/api/silences", body).status == 401
    created = server.call("POST", "/api/silences", body, token=ALICE)
    assert created.status == 201
    s = created.body["silence"]
    assert s["created_by"] == "张三" and s["state"] == "active"
    assert s["starts_at"] == T0.isoformat()
    assert s["ends_at"] == (T0 + timedelta(minutes=90)).isoformat()
    assert s["area_name"] == "香洲区"

    listed = server.call("GET", "/api/silences", token=VIEWER).body["silences"]
    assert [x["id"] for x in listed] == [s["id"]]

    server.clock.now = T0 + timedelta(minutes=30)
    ended = server.call("DELETE", f"/api/silences/{s['id']}", token=BOB)
    assert ended.status == 200 and ended.body["silence"]["state"] == "expired"
    assert ended.body["silence"]["ends_at"] == server.clock.now.isoformat()
    assert ended.body["silence"]["created_by"] == "张三"  # who set it stays on record
    assert server.call("DELETE", f"/api/silences/{s['id']}", token=VIEWER).status == 403
    assert server.call("DELETE", "/api/silences/nope", token=ALICE).status == 404
    assert server.call("GET", "/api/silences", token=VIEWER).body["silences"][0]["state"] \
        == "expired"


@pytest.mark.parametrize(("body", "why"), [
    ({"matchers": {}, "duration_minutes": 60, "comment": "x"},
     "a silence must name a source, hazard type, feed or area"),
    ({"matchers": {"status": "exercise"}, "duration_minutes": 60, "comment": "x"},
     "a silence must name a source, hazard type, feed or area"),
    ({"matchers": {"feed": "water"}, "duration_minutes": 60}, "a comment (why) is required"),
    ({"matchers": {"feed": "water"}, "comment": "x"}, "give either ends_at or duration_minutes"),
    ({"matchers": {"feed": "water"}, "comment": "x", "duration_minutes": 5,
      "ends_at": "2026-08-23T09:00:00+00:00"}, "give either ends_at or duration_minutes"),
    ({"matchers": {"feed": "water"}, "comment": "x", "ends_at": "2026-08-23T09:00:00"},
     "ends_at must be an ISO 8601 time with its offset (e.g. 2026-08-23T08:00+08:00)"),
    ({"matchers": {"feed": "water"}, "comment": "x", "ends_at": "2026-08-23T07:00:00+00:00"},
     "ends_at must be after starts_at"),
    ({"matchers": {"feed": "water"}, "comment": "x", "duration_minutes": 60 * 24 * 40},
     "a silence may last at most 31 days"),
    ({"matchers": {"feed": "water"}, "comment": "x", "duration_minutes": -5},
     "duration_minutes must be a positive number"),
    ({"matchers": {"station": "S1"}, "comment": "x", "duration_minutes": 5},
     "unknown matcher(s) station"),
    ({"matchers": "S1", "comment": "x", "duration_minutes": 5},
     "matchers is required: an object of source_id, hazard_type, feed, area_code, status"),
    ({"matchers": {"feed": "water"}, "comment": "x", "duration_minutes": 5, "id": "mine"},
     "unknown field(s) id; expected comment, duration_minutes, ends_at, matchers, starts_at"),
])
def test_invalid_silences_are_400_with_the_reason(server: Server, body: Any, why: str) -> None:
    server.clock.now = T0
    answer = server.call("POST", "/api/silences", body, token=ALICE)
    assert (answer.status, answer.body["error"]) == (400, why)


# -- the area top lists ------------------------------------------------------------------------


def test_top_lists_per_area_status_and_k(server: Server) -> None:
    village = kit.villages()[60]
    town, district = village[:9], village[:6]
    alerts = [kit.make_alert(village, WarningLevel.RED, source_id="TOP-R", exposure=80),
              kit.make_alert(village, WarningLevel.YELLOW, source_id="TOP-Y", exposure=1),
              kit.make_alert(village, WarningLevel.RED, source_id="TOP-D", exercise=True)]
    kit.write_alerts(server.redis_url, alerts)

    def top(query: str) -> Answer:
        return server.call("GET", "/api/top?" + query, token=VIEWER)

    def arrived() -> bool:  # the hub applies what Redis publishes within a moment
        ids = {r["hazard_id"] for q in (f"area={town}", f"area={town}&status=exercise")
               for r in top(q).body["top"]}
        return {"water_level:TOP-Y", "water_level:TOP-D"} <= ids

    deadline = datetime.now(UTC) + timedelta(seconds=10)
    while not arrived():
        assert datetime.now(UTC) < deadline, "the alerts never reached the ranking"

    for code in (town, district, village):
        answer = top(f"area={code}&k=50")
        assert answer.status == 200, answer.body
        rows = answer.body["top"]
        ids = [r["hazard_id"] for r in rows]
        assert ids[0] == "water_level:TOP-R"  # red, 180 points: first wherever it is listed
        assert ids.index("water_level:TOP-Y") > 0
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        assert "water_level:TOP-D" not in ids
        assert all(r["place"]["town_code"].startswith(code[:9]) for r in rows
                   if len(code) >= 9)
        assert answer.body["area"]["code"] == code and answer.body["area"]["level"] == "red"
        assert answer.body["area"]["risk_index"] > 0
    drills = top(f"area={town}&status=exercise")
    assert [r["hazard_id"] for r in drills.body["top"]] == ["water_level:TOP-D"]
    assert len(top(f"area={district}&k=1").body["top"]) == 1
    city = top("k=3").body
    assert city["area"]["code"] == "*" and city["area"]["name"] == "全市"
    for query, status in (("k=0", 400), ("k=501", 400), ("k=ten", 400),
                          ("status=drill", 400), ("area=999999", 404)):
        assert server.call("GET", "/api/top?" + query, token=VIEWER).status == status, query
    assert server.call("GET", "/api/top").status == 401
    areas = server.call("GET", "/api/areas", token=VIEWER).body
    assert areas["levels"][town] == "red" and areas["areas"][town]["risk_index"] > 0


# -- the operators file ------------------------------------------------------------------------


def test_operators_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "operators.yaml"
    path.write_text(operators_yaml(("张三", "operator", ALICE), ("张三", "viewer", BOB)),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match=r"operators.yaml:6: operators\[1\]\.name: '张三' is "
                                          "listed twice"):
        OperatorAuth(path)
    path.write_text(operators_yaml(("张三", "operator", ALICE), ("李四", "viewer", ALICE)),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="two entries share one token"):
        OperatorAuth(path)
    path.write_text("version: 1\noperators:\n  - name: 张三\n    role: admin\n"
                    f"    token_sha256: {token_sha256(ALICE)}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r":4: operators\[0\]\.role"):
        OperatorAuth(path)
    path.write_text("version: 1\noperators:\n  - name: 张三\n    role: operator\n"
                    "    token: plain\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="operators"):
        OperatorAuth(path)


def test_the_kiosk_token_can_never_be_an_operators(tmp_path: Path) -> None:
    path = tmp_path / "operators.yaml"
    path.write_text(operators_yaml(("张三", "operator", VIEWER)), encoding="utf-8")
    with pytest.raises(ConfigError, match="the viewer token is also '张三'"):
        make_app(aioredis.Redis(), token=VIEWER, operators=path)


def test_an_edited_operators_file_applies_and_a_bad_edit_keeps_the_last_good(
        tmp_path: Path) -> None:
    path = tmp_path / "operators.yaml"
    path.write_text(operators_yaml(("张三", "operator", ALICE)), encoding="utf-8")
    outcomes: list[str] = []
    auth = OperatorAuth(path, check_every_s=0.0, on_reload=outcomes.append)
    assert auth.identify(ALICE) is not None and auth.identify(BOB) is None
    path.write_text(operators_yaml(("张三", "viewer", ALICE), ("李四", "operator", BOB)),
                    encoding="utf-8")
    bob, alice = auth.identify(BOB), auth.identify(ALICE)
    assert bob is not None and bob.may_act
    assert alice is not None and alice.role == "viewer" and not alice.may_act
    path.write_text("version: 1\noperators: [broken\n", encoding="utf-8")
    assert auth.identify(BOB) is not None  # last good kept
    assert outcomes == ["ok", "error"]


# -- Redis down --------------------------------------------------------------------------------


def test_redis_down_is_503_and_nothing_is_half_done(tmp_path: Path, ops_file: Path) -> None:
    port = free_port()
    proc = start_redis("127.0.0.1", port, tmp_path / "redis", tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    running = serve(url, ops_file)
    try:
        hid = "water_level:DOWN-1"
        kit.write_alerts(url, [alert("DOWN-1")])
        assert running.step(hid, {"step": "acknowledged"}).status == 200
        stop([proc])
        for answer in (
                running.step(hid, {"step": "dispatched", "unit": "一中队"}),
                running.call("GET", f"/api/alerts/{hid}/steps", token=VIEWER),
                running.call("GET", "/api/silences", token=VIEWER),
                running.call("POST", "/api/silences", {"matchers": {"feed": "water"},
                                                       "duration_minutes": 5, "comment": "x"},
                             token=ALICE),
                running.call("DELETE", "/api/silences/any", token=ALICE)):
            assert answer.status == 503, answer.body
            assert "Redis" in answer.body["error"] and answer.headers["Retry-After"]
        assert running.call("GET", "/healthz").status == 503
        # auth is still checked first: no credentials, no hint about Redis
        assert running.step(hid, {"step": "handled"}, token=None).status == 401
    finally:
        running.stop()
        stop([proc])
