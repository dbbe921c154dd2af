"""vLLM processes a test started, told apart from those of tests running beside it (`make test` runs two
at once): a server and every process it starts (its engine core, workers) write to the server's log, so
they are found by where their output goes: the log directory the test gave. (Not by the environment:
on CPU servers are forked by the warm launcher, service/engine/launcher.py, whose children keep the
environment the launcher started with.)"""

from __future__ import annotations

import os
from pathlib import Path

import psutil


def vllm_processes(log_dir: Path) -> set[int]:
    """Live processes whose output goes to a file in `log_dir` (a vLLM server's log, and so its engine)."""
    where = str(Path(log_dir).resolve()) + os.sep
    found = set()
    for p in psutil.process_iter():
        try:
            out = os.readlink(f"/proc/{p.pid}/fd/1")
            if out.startswith(where) and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to read
            continue
    return found
