"""Running hostile inputs where a crash, a hang or a memory bomb cannot take the test run with it.

`run_isolated(code)` runs a snippet of Python in a fresh interpreter with a wall-clock limit and an
address-space limit, and reports how it ended: exit status, the signal that killed it (a SIGSEGV
means the reader was memory-unsafe), whether it timed out, its peak resident memory and its output.
The snippet signals a clean refusal by printing a line of its own; see `refused_cleanly`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURE

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture
def checkpoint(tmp_path):
    """A writable copy of the official fixture checkpoint."""
    shutil.copytree(FIXTURE / "ckpt-0", tmp_path / "ckpt-0")
    for path in (tmp_path / "ckpt-0").iterdir():
        path.chmod(0o644)
    return tmp_path


@dataclasses.dataclass
class Outcome:
    returncode: int | None  # None: killed at the time limit
    signal: str | None  # the signal that ended it, e.g. "SIGSEGV"
    timed_out: bool
    peak_rss: int  # bytes
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"returncode={self.returncode} signal={self.signal} timed_out={self.timed_out} "
                f"peak_rss={self.peak_rss / MiB:.0f} MiB\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")


def run_isolated(code: str, *, timeout: float = 20.0, address_space: int = 6 << 30, env: dict | None = None
                 ) -> Outcome:
    """Run `code` (dedented) with `python -c` under a time and address-space limit (RLIMIT_AS).

    JAX reserves a few GiB of address space at start, so the default limit leaves it room and still
    stops a reader that tries to allocate what a crafted header claims.
    """
    # The child sets its own limits before anything else runs (a preexec_fn would fork this
    # multithreaded, JAX-using process, which can deadlock).
    prologue = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space})); "
                "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n")
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **(env or {})}
    process = subprocess.Popen([sys.executable, "-c", prologue + textwrap.dedent(code)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=environment, cwd=ROOT)
    output: dict[str, str] = {}
    readers = [threading.Thread(target=lambda name=name, stream=stream: output.setdefault(name, stream.read()))
               for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for reader in readers:
        reader.start()
    deadline, timed_out = time.monotonic() + timeout, False
    while True:  # wait4, not Popen.wait: it also gives this child's own peak resident memory
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.02)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    code_or_signal = process.returncode
    killed_by = signal.Signals(-code_or_signal).name if code_or_signal < 0 and not timed_out else None
    return Outcome(None if timed_out else code_or_signal, killed_by, timed_out, usage.ru_maxrss * 1024,
                   output.get("stdout", ""), output.get("stderr", ""))


def refused_cleanly(outcome: Outcome, marker: str = "REFUSED") -> bool:
    """True when the snippet ran to its end and printed `marker` (it caught the expected error)."""
    return outcome.returncode == 0 and not outcome.timed_out and marker in outcome.stdout
