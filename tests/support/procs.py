"""vLLM processes a test started, told apart from those of tests running beside it (`make test` runs two
at once): the test gives its children a mark in their environment, which every descendant inherits."""

from __future__ import annotations

import uuid

import psutil

MARK = "TESTS_VLLM_MARK"  # not RANKLOOP_*: those are settings, and an unknown one is refused


def new_mark() -> str:
    return uuid.uuid4().hex


def vllm_processes(mark: str) -> set[int]:
    """Live vLLM servers, engine cores and workers carrying `mark`."""
    found = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "service.engine.vllm_main" not in cmd and not (p.info["name"] or "").startswith("VLLM::"):
            continue
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except psutil.Error:  # gone meanwhile
            continue
    return found
