"""The command table's parameters and functions for jobs: start one (with where its trainer runs), and
read its log (merged into service/control/commands.py)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from service.control.context import Context
from service.control.params import Params
from service.core.errors import UserError
from service.jobs import runner


class JobId(Params):
    job_id: int = Field(description="job id")


class JobLog(Params):
    job_id: int = Field(description="job id")
    offset: int = Field(0, ge=0, description="bytes of the log already read")


def job_log(ctx: Context, p: JobLog) -> dict:
    """The job's log from `offset` on (at most 256 KiB): what its trainer printed, wherever it ran."""
    path = runner.get_job(ctx.store, p.job_id).get("log_path")
    try:
        with open(path or "", "rb") as f:
            f.seek(p.offset)
            chunk = f.read(256 << 10)
    except OSError:
        chunk = b""
    return {"text": chunk.decode("utf-8", "replace"), "offset": p.offset + len(chunk)}


class StartJob(Params):
    kind: str = Field(description="the job kind: sample, reward, sft, dpo, grpo, rloo or evaluate")
    config: dict[str, Any] = Field(default_factory=dict, description="the fields of the kind's config")
    options: dict[str, Any] = Field(
        default_factory=dict, description="how the job is judged, not what it trains (reward: min_accuracy)"
    )
    launch: dict[str, Any] = Field(
        default_factory=dict,
        description="where its trainer runs, over the jobs settings: launcher (local, accelerate, ray), "
        "ray_address, gpus, cpus, memory_gib, num_processes, ...",
    )


def start_job(ctx: Context, p: StartJob) -> dict:
    if p.kind not in runner.KINDS:
        raise UserError(f"unknown job kind {p.kind!r}; valid: {', '.join(runner.KINDS)}")
    return {
        "job_id": ctx.jobs.submit(
            p.kind, p.config, p.options, source=f"the {p.kind} job's config", launch=p.launch
        )
    }
