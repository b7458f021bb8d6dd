"""`onemap up` as a user runs it: alerts on the dashboard, a clean stop, a clean second start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from onemap.embedded import free_port, onemap_command

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, tmp: Path, *extra: str, ports: dict[str, int] | None = None) -> None:
        self.ports = ports or {name: free_port()
                               for name in ("kafka", "redis", "dashboard", "metrics")}
        self.log = tmp / "up.log"
        self.argv = [*onemap_command("up"),
                     "--kafka-port", str(self.ports["kafka"]),
                     "--redis-port", str(self.ports["redis"]),
                     "--dashboard-port", str(self.ports["dashboard"]),
                     "--metrics-port", str(self.ports["metrics"]),
                     "--data-dir", str(tmp / "var"), *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONEMAP_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=tmp)
        self.descendants: dict[int, psutil.Process] = {}
        #: the command line of each descendant, read when it was first seen (a short-lived
        #: one may be gone by the time the test looks)
        self.command_lines: dict[int, str] = {}

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}/"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def remember_children(self) -> None:
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            self.descendants[child.pid] = child
            # (read again while empty: a child caught between its fork and its exec, or
            # redis-server rewriting its title, shows none)
            if not self.command_lines.get(child.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.command_lines[child.pid] = " ".join(child.cmdline())

    def get(self, url: str) -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def wait_page(self, predicate: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        page = ""
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"onemap up exited early:\n{self.output()}"
            self.remember_children()
            try:
                page = self.get(self.dashboard)
                if predicate in page:
                    return page
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{predicate!r} not on the page within {timeout_s} s:\n"
                             f"{page[:2000]}\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.remember_children()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def leftovers(self) -> list[psutil.Process]:
        alive = []
        for p in self.descendants.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        return alive


@pytest.fixture()
def up_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_up_shows_alerts_then_stops_every_child_and_starts_again(up_dir: Path) -> None:
    up = Up(up_dir, "--speed", "240")
    try:
        page = up.wait_page('class="alert level-', timeout_s=60)
        assert "珠海市应急一张图" in page
        assert "OneMap is up." in up.output()
        assert f"http://127.0.0.1:{up.ports['dashboard']}/" in up.output()
        assert f":{up.ports['metrics']}/metrics" in up.output()
        names = set(up.command_lines.values())
        for part in ("tansu", "redis-server", "onemap worker", "onemap dashboard"):
            assert any(part in n for n in names), f"{part} not among children: {names}"
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, up.output()
    assert up.leftovers() == [], "child processes survived onemap up"
    for port in up.ports.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # free again

    # right after, on the very same ports: nothing stale is left to collide with
    second = Up(up_dir, "--scenario", "none", ports=up.ports)
    try:
        second.wait_page("当前无预警", timeout_s=60)
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.output()
    assert second.leftovers() == []


def test_up_typhoon_sends_the_storms_sms_over_real_smpp(up_dir: Path) -> None:
    up = Up(up_dir, "--scenario", "typhoon", "--speed", "600")
    phones = up_dir / "var" / "smsc-messages.jsonl"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
                phones.exists() and "【珠海应急】" in phones.read_text(encoding="utf-8")):
            assert up.proc.poll() is None, f"onemap up exited early:\n{up.output()}"
            up.remember_children()
            time.sleep(0.5)
        lines = phones.read_text(encoding="utf-8").splitlines() if phones.exists() else []
        assert lines, f"no SMS reached the loopback SMSC:\n{up.output()}"
        first = json.loads(lines[0])
        assert first["text"].startswith("【珠海应急】") and first["message_ids"]
        assert f"phones     {phones}" in up.output() and "(loopback SMSC" in up.output()
        names = set()
        for p in up.descendants.values():
            with contextlib.suppress(psutil.NoSuchProcess):  # e.g. the replay, done meanwhile
                names.add(" ".join(p.cmdline()))
        assert any("onemap.sinks.sms.smsc" in n for n in names), names
        assert not any("ONEMAP_SMS" in n or "--password" in n for n in names)
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, up.output()
    assert up.leftovers() == [], "child processes survived onemap up"


def test_port_in_use_names_the_port_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [*onemap_command("up"), "--dashboard-port", str(port),
             "--kafka-port", str(free_port()), "--redis-port", str(free_port()),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert f"port {port} (dashboard) is already in use" in result.stderr
    assert "--dashboard-port" in result.stderr
