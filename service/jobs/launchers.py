"""Where a job's trainer runs: a child process here (`local`), N processes under `accelerate launch`
(`accelerate`), or a job on a Ray cluster submitted with Ray's Jobs API (`ray`).

Each start gives a handle the job follows the same way: `poll()` is None while the trainer runs and its
exit status after (0 succeeded), `stop()` ends it wherever it runs, `sync_log()` copies what it printed
into the job's log, `reason()` says why it failed. `ref` names it so that a service that restarts can
`attach()` to a Ray job still running instead of losing it. The trainer is the same command in every
case, `python -m MODULE --config FILE`: it reads an immutable snapshot and a checkpoint and writes a
checkpoint and metrics.json, so it never needs the database, wherever it runs.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Protocol

from service.core.procs import log_tail, signal_group, start_group
from service.core.settings import LaunchOptions
from service.engine.ray_jobs import RayHandle


class Handle(Protocol):
    ref: str

    def poll(self) -> int | None: ...

    def stop(self) -> None: ...

    def sync_log(self) -> None: ...

    def reason(self) -> str: ...


class ProcessHandle:
    """A trainer (or `accelerate launch` and its processes) in a process group of its own here."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]):
        self.proc = start_group(argv, log_path, env)
        self.log_path = log_path
        self.ref = f"pid:{self.proc.pid}"
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        signal_group(self.proc.pid, 9)  # the trainer must not outlive its job
        self.proc.wait()

    def sync_log(self) -> None:
        pass  # it writes the log itself

    def reason(self) -> str:
        code = self.proc.returncode
        return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def trainer_argv(module: str, cfg_file: Path, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", module, "--config", str(cfg_file)]


def accelerate_argv(module: str, cfg_file: Path, opts: LaunchOptions) -> list[str]:
    """`accelerate launch` of the trainer: N processes (torchrun underneath; over gloo on a CPU)."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(opts.num_processes)]
    if opts.num_processes > 1:
        argv.append("--multi_gpu")  # what starts N processes, GPUs or not
    if opts.accelerate_config:
        argv += ["--config_file", str(opts.accelerate_config)]
    else:  # what accelerate would otherwise guess and warn about; the trainer's config sets bf16 itself
        argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*argv, "-m", module, "--config", str(cfg_file)]


def start(
    opts: LaunchOptions, module: str, cfg_file: Path, log_path: Path, env: dict[str, str], job_id: int
) -> Handle:
    """Start the trainer where `opts` says."""
    if opts.launcher == "local":
        return ProcessHandle(trainer_argv(module, cfg_file), log_path, env)
    if opts.launcher == "accelerate":
        return ProcessHandle(accelerate_argv(module, cfg_file, opts), log_path, env)
    assert opts.ray_address is not None  # checked when the job was submitted
    handle = RayHandle(opts.ray_address, f"rankloop-{job_id}-{uuid.uuid4().hex[:8]}", log_path)
    handle.submit(trainer_argv(module, cfg_file, opts.python), env, opts)
    return handle


def attach(ref: str, log_path: Path) -> Handle:
    """The handle of a Ray job started before this process (a service restart)."""
    kind, _, rest = ref.partition(":")
    if kind != "ray":
        raise ValueError(f"only a Ray job can be followed again; {ref!r} is not one")
    address, _, submission_id = rest.partition("#")
    # A trainer's job log holds only what was copied from Ray: its length in characters is where to go on.
    copied = len(log_path.read_text(encoding="utf-8", errors="replace")) if log_path.exists() else 0
    return RayHandle(address, submission_id, log_path, copied)


def failure(handle: Handle, log_path: Path) -> str:
    return f"{handle.reason()}; nothing was registered. Last lines of {log_path}:\n{log_tail(log_path, 15)}"
