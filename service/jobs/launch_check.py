"""What a launcher can run, checked before a job exists (service/jobs/launchers.py runs it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel

from service.core.errors import UserError
from service.core.settings import LaunchOptions, Settings
from service.engine.data_parallel import replica_count, replica_envs
from service.engine.server import is_cpu_build

TRAINERS = ("reward", "sft", "dpo", "grpo", "rloo")  # kinds whose work is one trainer process


def _inside(path: Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def check_launch(kind: str, cfg: BaseModel, opts: LaunchOptions, settings: Settings) -> LaunchOptions:
    """The launch options for a job of `kind`, or UserError saying what cannot run that way and why."""
    if opts.launcher == "local":
        return opts
    if opts.launcher == "accelerate":
        if kind not in TRAINERS:  # sampling and evaluation: N data-parallel vLLM servers here
            vllm = getattr(cfg, "vllm", None) or settings.vllm
            replica_envs(replica_count(vllm, opts), vllm.tensor_parallel_size or 1, is_cpu_build())
        return opts
    if not opts.ray_address:
        raise UserError(
            "--launcher ray needs the cluster's address: --ray-address http://HEAD:8265 (jobs.ray_address)"
        )
    if importlib.util.find_spec("ray") is None:
        raise UserError("--launcher ray needs Ray's client here: pip install 'ray[default]'")
    root = opts.storage_root
    if root is not None:
        if not root.is_dir():
            raise UserError(f"jobs.storage_root {root} is not a directory; mount the shared storage there")
        paths = [(name, getattr(cfg, name, None)) for name in ("snapshot", "base_model", "output_dir")]
        paths += [("model", m) for m in getattr(cfg, "models", None) or []]  # a sampling job's checkpoints
        outside = [
            f"{name} {value}" for name, value in paths if value is not None and not _inside(Path(value), root)
        ]
        if outside:
            raise UserError(
                f"a Ray job reads and writes only under the shared storage root {root}; "
                f"{', '.join(outside)} lie outside it (put the data directory there, or copy them in)"
            )
    return opts
