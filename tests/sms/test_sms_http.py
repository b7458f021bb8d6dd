"""The HTTP SMS provider against a real aiohttp gateway on loopback, started by each test."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from onemap.embedded import free_port
from onemap.errors import ComponentError, ConfigError
from onemap.sinks.base import Outcome
from onemap.sinks.sms.http import HttpSmsConfig, HttpSmsProvider
from onemap.sinks.sms.message import SmsMessage
from onemap.sinks.sms.outbox import provider_from_url

TOKEN = "tok-7f3a9c"
PHONE = "13800000001"
NOW = datetime(2024, 8, 23, 4, 0, tzinfo=UTC)
TEXT = "【珠海应急】红色暴雨预警 金湾区平沙镇美平社区 3小时降雨112毫米 请立即转移 回复1确认"
MESSAGE = SmsMessage(key="rainstorm:ZH-AWS-028#1/duty-440404", alert_id="rainstorm:ZH-AWS-028#1",
                     recipient_id="duty-440404", phone=PHONE, text=TEXT)


@dataclasses.dataclass
class Gateway:
    """What the test gateway answers, and every request it saw."""

    port: int = 0
    status: int = 200
    reply: Any = dataclasses.field(default_factory=lambda: {"code": 0, "msgid": "m1"})
    delay: float = 0.0
    requests: list[tuple[CIMultiDict[str], bytes, str]] = dataclasses.field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((CIMultiDict(request.headers), await request.read(),
                              request.query_string))
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(self.reply, bytes):
            return web.Response(status=self.status, body=self.reply)
        return web.json_response(self.reply, status=self.status)

    def url(self, options: str = "", auth: str = f":{TOKEN}@") -> str:
        return f"http://{auth}127.0.0.1:{self.port}/v1/sms?appid=42{options}"


def run(scenario: Callable[[Gateway], Awaitable[None]]) -> None:
    async def main() -> None:
        gateway = Gateway()
        app = web.Application()
        app.router.add_post("/v1/sms", gateway.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        gateway.port = runner.addresses[0][1]
        try:
            await scenario(gateway)
        finally:
            await runner.cleanup()
    asyncio.run(main())


def test_success_posts_the_json_body_with_auth_and_idempotency_key() -> None:
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url("&onemap_success=code:0"))
        await p.check()
        assert await p.submit([MESSAGE], NOW) == [Outcome.DELIVERED]
        [(headers, body, query)] = gw.requests
        assert json.loads(body) == {"phone": PHONE, "text": TEXT, "key": MESSAGE.key}
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Idempotency-Key"] == MESSAGE.key
        assert headers["Content-Type"].startswith("application/json")
        assert query == "appid=42"  # the onemap_ options stay on our side
        await p.close()
    run(scenario)


def test_a_retried_request_carries_the_same_idempotency_key_in_a_configured_header() -> None:
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url("&onemap_idempotency_header=X-Request-Id"))
        gw.status = 503
        assert await p.submit([MESSAGE], NOW) == [Outcome.RETRY]
        gw.status = 200
        assert await p.submit([MESSAGE], NOW) == [Outcome.DELIVERED]
        assert [h["X-Request-Id"] for h, _, _ in gw.requests] == [MESSAGE.key] * 2
        await p.close()
    run(scenario)


@pytest.mark.parametrize(("status", "outcome"), [
    (429, Outcome.RETRY), (500, Outcome.RETRY), (503, Outcome.RETRY), (408, Outcome.RETRY),
    (400, Outcome.FAILED), (401, Outcome.FAILED), (404, Outcome.FAILED), (302, Outcome.FAILED),
])
def test_status_codes_map_to_outcomes(status: int, outcome: Outcome) -> None:
    async def scenario(gw: Gateway) -> None:
        gw.status = status
        p = HttpSmsProvider.from_url(gw.url())
        assert await p.submit([MESSAGE], NOW) == [outcome]
        await p.close()
    run(scenario)


def test_a_success_field_decides_within_2xx() -> None:
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url("&onemap_success=result.code:0"
                                            "&onemap_retry_values=1001,1002"))
        gw.reply = {"result": {"code": 0}}
        assert await p.submit([MESSAGE], NOW) == [Outcome.DELIVERED]
        gw.reply = {"result": {"code": 1001, "msg": "rate limited"}}
        assert await p.submit([MESSAGE], NOW) == [Outcome.RETRY]
        gw.reply = {"result": {"code": 2001, "msg": "bad number"}}
        assert await p.submit([MESSAGE], NOW) == [Outcome.FAILED]
        gw.reply = b"<html>proxy error</html>"
        assert await p.submit([MESSAGE], NOW) == [Outcome.RETRY]
        await p.close()
    run(scenario)


def test_a_gateway_that_does_not_answer_in_time_is_retry() -> None:
    async def scenario(gw: Gateway) -> None:
        gw.delay = 2.0
        p = HttpSmsProvider.from_url(gw.url("&onemap_timeout=0.2"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await p.submit([MESSAGE], NOW) == [Outcome.RETRY]
        assert loop.time() - started < 1.5
        await p.close()
    run(scenario)


def test_an_unreachable_gateway_is_retry_and_fails_the_start_up_check() -> None:
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(f"http://127.0.0.1:{free_port()}/sms")
        with pytest.raises(ComponentError, match=r"127\.0\.0\.1:\d+ is not reachable"):
            await p.check()
        assert await p.submit([MESSAGE], NOW) == [Outcome.RETRY]
        await p.close()
    run(scenario)


def test_template_values_are_json_escaped_and_never_substituted_twice(tmp_path: Path) -> None:
    template = tmp_path / "body.json"
    template.write_text('{"to": ["86{phone}"], "content": "{text}", "ref": "{key}", '
                        '"meta": {"sign": "珠海应急", "n": 1, "alert": "{alert_id}"}}',
                        encoding="utf-8")
    hostile = '他说 "1" \\ 已确认\n{phone}", "to": "10086'
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url(f"&onemap_template=@{template}"))
        m = dataclasses.replace(MESSAGE, text=hostile)
        assert await p.submit([m], NOW) == [Outcome.DELIVERED]
        [(_, body, _)] = gw.requests
        assert json.loads(body) == {"to": [f"86{PHONE}"], "content": hostile, "ref": m.key,
                                    "meta": {"sign": "珠海应急", "n": 1, "alert": m.alert_id}}
        assert "珠海应急".encode() in body  # UTF-8, not \\u escapes
        await p.close()
    run(scenario)


def test_basic_auth_from_the_url_or_a_secret_setting() -> None:
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url(auth="onemap:s3cret@"))
        await p.submit([MESSAGE], NOW)
        q = provider_from_url(gw.url(auth="onemap@"), secret=TOKEN)
        await q.submit([MESSAGE], NOW)
        auths = [h["Authorization"] for h, _, _ in gw.requests]
        assert auths == ["Basic " + base64.b64encode(b"onemap:s3cret").decode(),
                         "Basic " + base64.b64encode(f"onemap:{TOKEN}".encode()).decode()]
        await p.close()
        await q.close()
    run(scenario)


def test_the_token_never_appears_in_logs_repr_or_errors_and_phones_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async def scenario(gw: Gateway) -> None:
        p = HttpSmsProvider.from_url(gw.url())
        for gw.status in (200, 429, 400, 500):
            await p.submit([MESSAGE], NOW)
        assert TOKEN not in repr(p) and TOKEN not in repr(p.config)
        await p.close()
    run(scenario)
    assert "429" in caplog.text and "400" in caplog.text
    assert TOKEN not in caplog.text
    assert PHONE not in caplog.text and "138****0001" in caplog.text


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown placeholder"):
        HttpSmsConfig.from_url('https://gw/sms?onemap_template={"to": "{mobile}"}')
    with pytest.raises(ConfigError, match="not JSON"):
        HttpSmsConfig.from_url("https://gw/sms?onemap_template={to}")
    with pytest.raises(ConfigError, match="unknown HTTP SMS option"):
        HttpSmsConfig.from_url("https://gw/sms?onemap_tiemout=3")
    with pytest.raises(ConfigError, match="FIELD:VALUE"):
        HttpSmsConfig.from_url("https://gw/sms?onemap_success=code")
    with pytest.raises(ConfigError) as caught:
        provider_from_url(f"htps://u:{TOKEN}@gw/sms")
    assert TOKEN not in str(caught.value)
