"""`onemap up`: the whole system on one machine, on the embedded default.

Starts (unless --kafka / --redis name existing ones) the embedded broker and Redis, creates
the topics, starts the worker and the dashboard as child processes, then replays a scenario.
Ctrl-C or SIGTERM stops every child; if any child dies, everything stops and says where its
log is.

With the ``typhoon`` scenario (or ``UpOptions.smpp=True``) it also runs the loopback SMPP
server (:mod:`onemap.sinks.sms.smsc`) as a child and points the worker's SMS provider at it
(``smpp://onemap@127.0.0.1:PORT``, a random password handed over by environment), so the demo
goes through real SMPP binds, submits and delivery receipts; what the "phones" received is in
``DATA_DIR/smsc-messages.jsonl``. An SMS provider configured by ``ONEMAP_SMS_OUTBOX`` is never
overridden. The default demo keeps the file outbox.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from onemap.embedded import (
    MEMORY_STORAGE,
    check_broker_storage,
    free_port,
    onemap_command,
    require_free,
    spawn,
    start_broker,
    start_redis,
    stop,
    tcp_ready,
    wait_until,
)
from onemap.errors import OneMapError
from onemap.settings import Settings
from onemap.topics import ensure_topics

#: Short consumer-group timeouts: a worker is ready in seconds on the embedded broker.
EMBEDDED_GROUP_TIMEOUTS = {"rebalance_timeout_s": 6.0, "session_timeout_s": 6.0,
                           "heartbeat_interval_s": 1.0}


@dataclasses.dataclass(frozen=True)
class UpOptions:
    kafka_url: str | None = None
    redis_url: str | None = None
    kafka_port: int = 19092
    redis_port: int = 16379
    scenario: str | None = "demo"
    speed: float = 120.0
    #: run the loopback SMSC and send SMS over SMPP; None: only for the typhoon scenario
    smpp: bool | None = None
    #: the loopback SMSC's port; None: a free one (printed)
    smsc_port: int | None = None
    #: the embedded broker's storage (onemap.embedded.start_broker)
    broker_storage: str = MEMORY_STORAGE

    @property
    def wants_smpp(self) -> bool:
        return self.smpp if self.smpp is not None else self.scenario == "typhoon"


#: The loopback SMSC's account (the password is random per run).
SMSC_SYSTEM_ID = "onemap"
SMSC_SOURCE_ADDR = "12110"


@dataclasses.dataclass(frozen=True)
class LoopbackSmsc:
    """The loopback SMPP server `onemap up` runs for the demo, and how the worker reaches it."""

    host: str
    port: int
    outbox: Path
    password: str = dataclasses.field(repr=False)

    @classmethod
    def plan(cls, host: str, opts: UpOptions, base: Settings) -> LoopbackSmsc | None:
        """None unless SMPP is wanted and no SMS provider is configured already."""
        if not opts.wants_smpp or base.sms_outbox is not None:
            return None
        if opts.smsc_port is not None:
            require_free(host, opts.smsc_port, "loopback SMSC", "UpOptions.smsc_port")
        return cls(host, opts.smsc_port or free_port(host),
                   base.data_dir / "smsc-messages.jsonl",
                   secrets.token_hex(4))  # 8 characters: the SMPP 3.4 maximum

    def settings(self) -> dict[str, object]:
        return {"sms_outbox": f"smpp://{SMSC_SYSTEM_ID}@{self.host}:{self.port}"
                              f"?source_addr={SMSC_SOURCE_ADDR}",
                "sms_secret": self.password}

    def argv(self) -> list[str]:
        return [sys.executable, "-P", "-m", "onemap.sinks.sms.smsc", "--host", self.host,
                "--port", str(self.port), "--system-id", SMSC_SYSTEM_ID,
                "--outbox", str(self.outbox)]

    def env(self) -> dict[str, str]:
        # the password by environment, never in argv (visible in `ps`)
        return {**_clean_env(), "ONEMAP_SMSC_PASSWORD": self.password}


#: Scenarios made by a generator when asked for (deterministic; written under the data dir).
GENERATED = ("typhoon",)


def scenario_files(name: str, data_dir: Path = Path("var")) -> list[Path]:
    """The replay files of a shipped or generated scenario, or a path given directly."""
    direct = Path(name)
    if direct.is_file():
        return [direct]
    if name == "typhoon":
        from onemap.streams import typhoon

        return [typhoon.write(data_dir / "scenarios" / "typhoon.jsonl")]
    root = Path(str(importlib.resources.files("onemap.fixtures").joinpath("scenarios")))
    candidates = [root / f"{name}.jsonl", *sorted((root / name).glob("*.jsonl"))] \
        if (root / name).is_dir() else [root / f"{name}.jsonl"]
    found = [p for p in candidates if p.is_file()]
    if not found:
        known = sorted([*(p.stem for p in root.glob("*.jsonl")), *GENERATED])
        raise OneMapError(f"unknown scenario {name!r}; shipped scenarios: {', '.join(known)}")
    return found


class Supervisor:
    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self, base: Settings, opts: UpOptions) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            return self._run(base, opts)
        finally:
            self.shutdown()

    def _start(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        log_path = log_dir / f"{name}.log"
        self.logs[name] = log_path
        self.children[name] = spawn(argv, env=env, log_path=log_path)

    def _run(self, base: Settings, opts: UpOptions) -> int:
        log_dir = base.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        host = "127.0.0.1"
        if opts.kafka_url is None:
            check_broker_storage(opts.broker_storage)
            require_free(host, opts.kafka_port, "Kafka broker", "--kafka-port or --kafka URL")
        if opts.redis_url is None:
            require_free(host, opts.redis_port, "Redis", "--redis-port or --redis URL")
        require_free(base.dashboard_host, base.dashboard_port, "dashboard", "--dashboard-port")
        require_free(base.metrics_host, base.metrics_port, "worker metrics", "--metrics-port")
        smsc = LoopbackSmsc.plan(host, opts, base)

        kafka_url = opts.kafka_url or f"kafka://{host}:{opts.kafka_port}"
        redis_url = opts.redis_url or f"redis://{host}:{opts.redis_port}/0"
        overrides: dict[str, object] = {"kafka_url": kafka_url, "redis_url": redis_url}
        if opts.kafka_url is None:
            overrides.update(EMBEDDED_GROUP_TIMEOUTS)
        if smsc is not None:
            overrides.update(smsc.settings())
        settings = dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
        settings.validate()

        say = _say
        if opts.kafka_url is None:
            say(f"starting embedded Kafka broker (Tansu) on {host}:{opts.kafka_port}, "
                f"storage {opts.broker_storage} ...")
            self.logs["broker"] = log_dir / "broker.log"
            self.children["broker"] = start_broker(host, opts.kafka_port, self.logs["broker"],
                                                   storage=opts.broker_storage)
        if opts.redis_url is None:
            say(f"starting embedded Redis on {host}:{opts.redis_port} ...")
            self.logs["redis"] = log_dir / "redis.log"
            self.children["redis"] = start_redis(host, opts.redis_port,
                                                 settings.data_dir / "redis", self.logs["redis"])
        ensure_topics(settings)
        env = {**_clean_env(), **settings.as_env()}
        if smsc is not None:
            say(f"starting loopback SMPP server on {host}:{smsc.port} ...")
            self._start("smsc", smsc.argv(), smsc.env(), log_dir)
            # the worker binds at start-up and fails fast if nobody answers
            wait_until(tcp_ready(host, smsc.port), 20.0, f"loopback SMSC on {host}:{smsc.port}",
                       self.children["smsc"])
        self._start("worker", onemap_command("worker"), env, log_dir)
        self._start("dashboard", onemap_command("dashboard"), env, log_dir)
        files = scenario_files(opts.scenario, settings.data_dir) if opts.scenario else []
        if files:
            self._start("replay", onemap_command("replay", *map(str, files), "--speed",
                                                 str(opts.speed), "--rebase-now"), env, log_dir)
        for line in banner(settings, opts, smsc, log_dir, len(files)):
            say(line)
        return self._watch()

    def _watch(self) -> int:
        while not self.stopping:
            for name, proc in list(self.children.items()):
                code = proc.poll()
                if code is None:
                    continue
                if name == "replay" and code == 0:
                    _say("scenario replay finished; OneMap keeps running")
                    del self.children[name]
                    continue
                _say(f"error: {name} exited with code {code}; see {self.logs.get(name)}")
                return 1
            time.sleep(0.3)
        _say("stopping ...")
        return 0

    def shutdown(self) -> None:
        order = ["replay", "dashboard", "worker", "smsc", "redis", "broker"]
        procs = [self.children[n] for n in order if n in self.children]
        stop(procs)
        self.children.clear()


def banner(settings: Settings, opts: UpOptions, smsc: LoopbackSmsc | None, log_dir: Path,
           files: int) -> list[str]:
    """What `onemap up` prints once everything is started: where each part is."""
    lines = ["", "OneMap is up.",
             f"  dashboard  http://{settings.dashboard_host}:{settings.dashboard_port}/",
             f"  metrics    http://{settings.metrics_host}:{settings.metrics_port}/metrics",
             f"  kafka      {settings.kafka_url}"
             f"{'  (embedded)' if opts.kafka_url is None else ''}",
             f"  redis      {settings.redis_url}"
             f"{'  (embedded)' if opts.redis_url is None else ''}"]
    if smsc is not None:
        lines += [f"  sms        smpp://{smsc.host}:{smsc.port} (loopback SMSC, log "
                  f"{log_dir}/smsc.log)",
                  f"  phones     {smsc.outbox}  (every message the SMSC received)"]
    else:
        lines.append(f"  sms outbox {settings.sms_outbox_url}")
    lines.append(f"  logs       {log_dir}/")
    if files:
        lines.append(f"  scenario   {opts.scenario} at {opts.speed:g}x ({files} file(s))")
    lines.append("Press Ctrl-C to stop.")
    return lines


def _clean_env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")}


def _say(text: str) -> None:
    print(text, flush=True)
