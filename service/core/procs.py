"""Child processes in their own process group: start, check, stop (the vLLM engine and the
job runner both use this), and the tail of their logs.

A child started with `start_group` leads a new session, so stopping its group also ends
the processes it spawned (vLLM's EngineCore and workers, a trainer's data loaders).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol, TypeVar

LOG_TAIL_LINES = 30


class GroupLeader(Protocol):
    """What stopping a process group needs of its leader: a Popen, or service/engine/launcher.py's
    LaunchedProcess for a server another process forked."""

    pid: int

    def wait(self, timeout: float | None = None) -> int: ...


Leader = TypeVar("Leader", bound=GroupLeader)


# A watcher beside each group: when the process that started the group dies (kill -9 included),
# the group is stopped, so a crashed `rankloop` never leaves a vLLM server or a trainer running.
LEASH = """
import os, signal, sys, time
owner, pgid = int(sys.argv[1]), int(sys.argv[2])
def alive(fn, pid):
    try:
        fn(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive(os.killpg, pgid):
    time.sleep(1.0)
    if not alive(os.kill, owner):
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(wait)
        break
"""


def start_group(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `cmd` as the leader of a new process group, appending its output to `log_path`; the
    group is stopped if this process dies without stopping it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return leashed(proc)


def leashed(proc: Leader) -> Leader:
    """`proc`, with a watcher that stops the group it leads if this process dies without stopping it."""
    leash = subprocess.Popen(
        [sys.executable, "-c", LEASH, str(os.getpid()), str(proc.pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    setattr(proc, "leash", leash)  # noqa: B010 - carried on the process, waited for in stop_group
    return proc


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: GroupLeader, grace_s: float = 20.0) -> None:
    """SIGTERM the group `proc` leads, SIGKILL what is left after `grace_s`; wait until none remain."""
    pgid = proc.pid
    signal_group(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    leash = getattr(proc, "leash", None)
    if leash is not None:  # it sees the group gone within a second
        try:
            leash.wait(timeout=5)
        except subprocess.TimeoutExpired:
            leash.kill()
            leash.wait()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, width: int = 400) -> str:
    """The last lines of a log, each cut to `width` characters (vLLM prints very long ones)."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line if len(line) <= width else line[:width] + " ..." for line in tail)
    except FileNotFoundError:
        return "(no log)"
