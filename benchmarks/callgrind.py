"""Counting instructions instead of seconds: valgrind's callgrind, switched on around a row.

Why: this machine is a shared VM whose speed changes by up to 2× within the hour, so a
change of 5-10 % to the pure stages cannot be seen in timings (the same code's rules row
ranged 49-84 µs per record between runs). An instruction count is the same from run to run
for the same code and input whatever else the machine does (valgrind's callgrind counts
what the CPU would execute; it runs the program ~50× slower). It is not time: a cache miss
costs no instruction, so a change that moves memory around can matter more or less than
its count says. It is the steady measure for A/B of the pure Python work; the pipeline
benchmark stays the measure of a worker.

How: the benchmark re-runs itself under ``valgrind --tool=callgrind --collect-atstart=no
--instr-atstart=no``; the warm-up runs without instrumentation, and each measured row is
bracketed by callgrind's client requests (a ten-line C helper compiled here with ``cc``,
loaded with ctypes): start instrumenting once, then per row zero the counters, collect,
stop, and dump them under the row's name. ``read_counts`` reads the dumps back.

Needs valgrind and a C compiler (Debian: ``apt-get install valgrind gcc``; the headers come
with valgrind).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: set in the re-run process: where its helper and dumps live
ENV_DIR = "ONEMAP_CALLGRIND_DIR"

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void onemap_instrument(void) { CALLGRIND_START_INSTRUMENTATION; }
void onemap_begin(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void onemap_end(const char *name) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(name); }
"""


class MissingTool(RuntimeError):
    pass


def under_callgrind() -> bool:
    return bool(os.environ.get(ENV_DIR))


def rerun_under_callgrind(argv: list[str]) -> int:
    """Run ``python argv...`` under callgrind with the helper built; returns its exit code.
    The dumps are left in the directory named by the child's ``ENV_DIR``."""
    valgrind, cc = shutil.which("valgrind"), shutil.which("cc") or shutil.which("gcc")
    header = Path("/usr/include/valgrind/callgrind.h")
    if valgrind is None or cc is None or not header.exists():
        raise MissingTool("counting instructions needs valgrind (with its headers) and a C "
                          "compiler: apt-get install valgrind gcc")
    work = Path(tempfile.mkdtemp(prefix="onemap-callgrind-"))
    (work / "helper.c").write_text(_HELPER_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(work / "helper.so"),
                    str(work / "helper.c")], check=True)
    env = {**os.environ, ENV_DIR: str(work), "PYTHONHASHSEED": "0"}
    command = [valgrind, "--tool=callgrind", "--collect-atstart=no", "--instr-atstart=no",
               f"--callgrind-out-file={work}/cg.out", sys.executable, *argv]
    print(f"running under callgrind (~50× slower; dumps in {work})", file=sys.stderr,
          flush=True)
    return subprocess.run(command, env=env, check=False).returncode


class Meter:
    """The client requests, in the process under callgrind."""

    def __init__(self) -> None:
        self.dir = Path(os.environ[ENV_DIR])
        self.lib = ctypes.CDLL(str(self.dir / "helper.so"))
        self.lib.onemap_end.argtypes = [ctypes.c_char_p]
        self.lib.onemap_instrument()

    def begin(self) -> None:
        self.lib.onemap_begin()

    def end(self, name: str) -> None:
        self.lib.onemap_end(name.encode())


_TRIGGER = re.compile(r"^desc: Trigger: Client Request: (.*)$", re.MULTILINE)
_TOTAL = re.compile(r"^(?:totals|summary): (\d+)", re.MULTILINE)


def read_counts(directory: Path) -> dict[str, int]:
    """Instructions per dump name, from the dump files callgrind wrote."""
    counts: dict[str, int] = {}
    for path in sorted(directory.glob("cg.out*")):
        text = path.read_text(errors="replace")
        trigger, total = _TRIGGER.search(text), _TOTAL.search(text)
        if trigger and total:
            counts[trigger.group(1).strip()] = int(total.group(1))
    return counts
