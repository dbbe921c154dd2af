"""A process group started by rankloop ends when the process that started it dies, kill -9 included
(a crashed `rankloop` must not leave a vLLM server or a trainer running)."""

import subprocess
import sys
import time
from pathlib import Path

from service.core.procs import group_alive, start_group, stop_group
from tests.support import REPO

OWNER = """
import sys, time
from pathlib import Path
from service.core.procs import start_group
proc = start_group(["sleep", "300"], Path(sys.argv[1]))
print(proc.pid, flush=True)
time.sleep(300)
"""


def test_a_group_outlives_neither_a_killed_owner_nor_stop_group(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "log")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    pgid = int(owner.stdout.readline())
    assert group_alive(pgid)
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 15
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(pgid), "the group outlived the process that started it"

    proc = start_group(["sleep", "300"], tmp_path / "log2")  # stopped the normal way: its watcher ends too
    stop_group(proc, grace_s=5)
    assert not group_alive(proc.pid) and getattr(proc, "leash").poll() is not None  # noqa: B009
