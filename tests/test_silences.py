"""Silences: the pure rule (validation, matching, which silence wins) and its Redis store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from onemap.levels import WarningLevel
from onemap.records import Hazard, Place
from onemap.rules.silences import (
    MAX_DURATION,
    VALID,
    Matchers,
    Silence,
    matches,
    silenced_by,
    validate_silence,
)
from onemap.rules.urgency import example_hazard
from onemap.sinks.silences import (
    SILENCES_KEY,
    add_silence,
    expire_silence,
    prune_silences,
    read_silences,
)

T = TypeVar("T")
T0 = datetime(2026, 8, 23, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
# example_hazard(): geohazard GH1 (feed geohazard) in 珠海市 440400 / 香洲区 440402 /
# 拱北街道 440402001 / 示例社区 440402001001, actual
H = example_hazard(observed_at=T0)


def silence(sid: str = "s1", *, starts: datetime = T0 - HOUR, ends: datetime = T0 + HOUR,
            by: str = "张三", comment: str = "设备检修", **matchers: str) -> Silence:
    return Silence(sid, Matchers(**matchers), starts, ends, by, comment)


# -- validation ----------------------------------------------------------------------------


def test_a_well_formed_silence_is_valid() -> None:
    assert validate_silence(silence(source_id="GH1")) == VALID
    assert validate_silence(silence(area_code="440402", status="exercise"), T0) == VALID


@pytest.mark.parametrize(("changes", "why"), [
    ({}, "a silence must name a source, hazard type, feed or area"),
    ({"status": "actual"}, "a silence must name a source, hazard type, feed or area"),
    ({"feed": "water", "status": "drill"}, "status must be actual or exercise, not 'drill'"),
    ({"area_code": "香洲区"}, "area_code must be an administrative code (digits), not '香洲区'"),
    ({"area_code": "4"}, "area_code must be an administrative code (digits), not '4'"),
    ({"hazard_type": "water level"}, "hazard_type and feed are names of letters, digits or _.:-"),
    ({"source_id": "x" * 201}, "source_id longer than 200 characters"),
])
def test_what_a_silence_matches_is_checked(changes: dict[str, str], why: str) -> None:
    assert validate_silence(silence(**changes)) == why


def test_times_people_and_reasons_are_checked() -> None:
    ok = silence(feed="water")
    naive = T0.replace(tzinfo=None)
    cases = [
        (dataclasses.replace(ok, id="bad id!"), "the id must be 1-64 letters, digits or _.:-"),
        (dataclasses.replace(ok, starts_at=naive),
         "starts_at and ends_at must carry their timezone"),
        (dataclasses.replace(ok, created_by="  "), "who sets the silence is required"),
        (dataclasses.replace(ok, comment=""), "a comment (why) is required"),
        (dataclasses.replace(ok, comment="长" * 501),
         "comment longer than 500 characters (or created_by than 100)"),
        (dataclasses.replace(ok, ends_at=ok.starts_at), "ends_at must be after starts_at"),
        (dataclasses.replace(ok, ends_at=ok.starts_at + MAX_DURATION + timedelta(seconds=1)),
         "a silence may last at most 31 days"),
    ]
    for s, why in cases:
        assert validate_silence(s) == why
    # with "now": one that has already ended cannot be created, one in the future can
    assert validate_silence(ok, T0 + 2 * HOUR) == "the silence would already have ended"
    assert validate_silence(ok, T0 - 2 * HOUR) == VALID


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize(("matchers", "expected"), [
    ({"source_id": "GH1"}, True), ({"source_id": "GH2"}, False),
    ({"hazard_type": "geohazard"}, True), ({"hazard_type": "water_level"}, False),
    ({"feed": "geohazard"}, True), ({"feed": "water"}, False),
    ({"feed": "geohazard", "status": "actual"}, True),
    ({"feed": "geohazard", "status": "exercise"}, False),
    # area: a prefix of any of the place's codes (the city, its district, its town...)
    ({"area_code": "440400"}, True), ({"area_code": "440402"}, True),
    ({"area_code": "440402001"}, True), ({"area_code": "440402001001"}, True),
    ({"area_code": "440403"}, False), ({"area_code": "440402002"}, False),
    ({"area_code": "440402001002"}, False),
    # every matcher set must match
    ({"source_id": "GH1", "area_code": "440403"}, False),
    ({"source_id": "GH1", "hazard_type": "geohazard", "feed": "geohazard",
      "area_code": "440402001"}, True),
])
def test_every_set_matcher_must_match(matchers: dict[str, str], expected: bool) -> None:
    assert matches(silence(**matchers), H, T0) is expected


def test_a_village_silence_does_not_mute_a_hazard_placed_only_on_its_town() -> None:
    town_wide = dataclasses.replace(H, place=Place("440400", "珠海市", "440402", "香洲区",
                                                   "440402001", "拱北街道"))
    assert not matches(silence(area_code="440402001001"), town_wide, T0)
    assert matches(silence(area_code="440402001"), town_wide, T0)
    off_map = dataclasses.replace(H, place=Place())
    assert not matches(silence(area_code="44"), off_map, T0)
    assert matches(silence(feed="geohazard"), off_map, T0)


def test_drills_are_matched_by_status() -> None:
    drill = dataclasses.replace(H, exercise=True)
    assert matches(silence(feed="geohazard", status="exercise"), drill, T0)
    assert not matches(silence(feed="geohazard", status="actual"), drill, T0)
    assert matches(silence(feed="geohazard"), drill, T0)  # no status: both


def test_a_silence_is_in_force_from_its_start_until_just_before_its_end() -> None:
    s = silence(source_id="GH1", starts=T0, ends=T0 + HOUR)
    assert not matches(s, H, T0 - timedelta(microseconds=1))
    assert matches(s, H, T0)
    assert matches(s, H, T0 + HOUR - timedelta(microseconds=1))
    assert not matches(s, H, T0 + HOUR)
    assert [s.state(t) for t in (T0 - HOUR, T0, T0 + HOUR)] == ["pending", "active", "expired"]


def test_silenced_by_picks_the_silence_ending_last_whatever_the_order() -> None:
    short = silence("a-short", source_id="GH1", ends=T0 + HOUR)
    long_ = silence("z-long", area_code="440402", ends=T0 + 5 * HOUR)
    tie = silence("b-tie", feed="geohazard", ends=T0 + 5 * HOUR)
    other = silence("other", feed="water", ends=T0 + 9 * HOUR)
    expired = silence("old", source_id="GH1", starts=T0 - 5 * HOUR, ends=T0 - HOUR)
    for order in ([short, long_, tie, other, expired], [expired, other, tie, long_, short]):
        assert silenced_by(H, order, T0) is tie  # ends last; "b-tie" < "z-long"
    assert silenced_by(H, [short, other, expired], T0) is short
    assert silenced_by(H, [other, expired], T0) is None
    assert silenced_by(H, [], T0) is None


def test_json_round_trip_and_strict_matchers() -> None:
    s = silence(area_code="440402", status="actual", comment="台风期间<b>维护</b>")
    assert Silence.from_dict(orjson.loads(orjson.dumps(s.to_dict()))) == s
    assert s.to_dict()["matchers"] == {"area_code": "440402", "status": "actual"}
    with pytest.raises(ValueError, match="unknown matcher"):
        Matchers.from_dict({"station": "GH1"})
    with pytest.raises(ValueError, match="must be a string"):
        Matchers.from_dict({"source_id": 7})


# -- the store in Redis --------------------------------------------------------------------


def on_redis(redis_url: str, work: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await work(client)
        finally:
            await client.aclose()
    return asyncio.run(main())


@pytest.mark.integration
def test_the_store_adds_reads_expires_and_prunes(redis_url: str,
                                                 redis_client: redis.Redis) -> None:
    redis_client.delete(SILENCES_KEY)
    a = silence("a", source_id="GH1", starts=T0, ends=T0 + HOUR)
    b = silence("b", area_code="440402", starts=T0 - HOUR, ends=T0 + 3 * HOUR)

    async def work(client: aioredis.Redis) -> dict[str, Any]:
        pubsub = client.pubsub()
        await pubsub.subscribe("onemap:silences")
        await add_silence(client, a)
        await add_silence(client, b)
        out: dict[str, Any] = {"read": await read_silences(client)}
        with pytest.raises(ValueError, match="exists already"):
            await add_silence(client, dataclasses.replace(a, comment="overwrite"))
        with pytest.raises(ValueError, match="a comment"):
            await add_silence(client, silence("c", feed="water", comment=""))
        out["expired"] = await expire_silence(client, "b", T0 + HOUR)
        out["again"] = await expire_silence(client, "b", T0 + 2 * HOUR)  # ended: unchanged
        out["pending"] = await expire_silence(client, "a", T0 - HOUR)  # never in force
        out["unknown"] = await expire_silence(client, "nope", T0)
        out["after"] = await read_silences(client)
        messages = []
        for _ in range(20):  # the subscribe confirmation, then what was published
            m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if m is not None:
                messages.append(m["data"])
        out["messages"] = messages
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        out["pruned"] = await prune_silences(client, T0 + HOUR + timedelta(seconds=1))
        out["left"] = await read_silences(client)
        return out

    out = on_redis(redis_url, work)
    assert out["read"] == [b, a]  # oldest start first
    assert out["expired"] == dataclasses.replace(b, ends_at=T0 + HOUR)
    assert out["again"] == out["expired"]
    assert out["pending"].ends_at == a.starts_at and out["pending"].state(T0) == "expired"
    assert out["unknown"] is None
    assert {s.id: s.ends_at for s in out["after"]} == {"a": T0, "b": T0 + HOUR}
    assert out["after"][0].created_by == "张三"  # the record stays as it was set
    assert out["messages"] == [b"a", b"b", b"b", b"a"]  # only real changes are announced
    assert out["pruned"] == 2 and out["left"] == []


@pytest.mark.integration
def test_a_broken_entry_does_not_hide_the_others(redis_url: str,
                                                  redis_client: redis.Redis) -> None:
    redis_client.delete(SILENCES_KEY)
    good = silence("good", hazard_type="wind")
    redis_client.hset(SILENCES_KEY, mapping={"good": orjson.dumps(good.to_dict()),
                                             "junk": b"{not json", "half": b'{"id": "half"}'})
    assert on_redis(redis_url, read_silences) == [good]


def test_a_hazard_at_level_none_can_still_be_matched() -> None:
    # the lifecycle asks for resolutions too: muting a station mutes its all-clear as well
    gone: Hazard = dataclasses.replace(H, level=WarningLevel.NONE)
    assert silenced_by(gone, [silence(source_id="GH1")], T0) is not None
