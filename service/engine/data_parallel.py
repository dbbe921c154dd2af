"""Data-parallel vLLM replicas on this machine: what a sampling or evaluation job runs under
`--launcher accelerate` (N processes here, one per GPU), as a trainer runs as N processes.

N = `num_processes` / `vllm.tensor_parallel_size` servers of one checkpoint start at once, each on
its own devices: GPUs by CUDA_VISIBLE_DEVICES (a share of the ones this process sees), and with
vLLM's CPU build a share of this process's cores, as the server process's affinity (its engine would
otherwise spin on every core, and two of them would fight). The job deals its requests among them
(service/engine/sampler.py) and stores every answer itself, as with one server. They stop when the
block ends: unlike the service's one server per checkpoint, N of them are not kept for later jobs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from service.core.errors import UserError
from service.core.settings import LaunchOptions, VLLMOptions
from service.engine.server import VLLMServer, is_cpu_build, start_server
from service.engine.vllm_main import CORES_ENV


def replica_count(opts: VLLMOptions, launch: LaunchOptions) -> int:
    """How many servers `launch.num_processes` devices hold at `tensor_parallel_size` devices each."""
    per_server = opts.tensor_parallel_size or 1
    if launch.num_processes % per_server:
        raise UserError(
            f"--num-processes {launch.num_processes} does not divide into servers of "
            f"vllm.tensor_parallel_size {per_server} devices; give a multiple of {per_server}"
        )
    return launch.num_processes // per_server


def _chunks(items: list[str], n: int) -> list[list[str]]:
    """`items` in n contiguous parts as equal as can be (the first ones one longer)."""
    return [part.tolist() for part in np.array_split(items, n)]


def replica_envs(n: int, per_server: int, cpu_build: bool) -> list[dict[str, str]]:
    """The environment that puts each of n servers (of `per_server` devices) on devices of its own."""
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_ids = [g for g in gpus.split(",") if g] if gpus else [str(i) for i in range(n * per_server)]
    if len(gpu_ids) < n * per_server:
        raise UserError(
            f"{n} servers of {per_server} GPUs need {n * per_server}; CUDA_VISIBLE_DEVICES names {len(gpu_ids)}"
        )
    envs = [{"CUDA_VISIBLE_DEVICES": ",".join(ids)} for ids in _chunks(gpu_ids[: n * per_server], n)]
    if cpu_build:
        cores = [str(c) for c in sorted(os.sched_getaffinity(0))]
        if len(cores) < n * per_server:
            raise UserError(
                f"{n} CPU servers of {per_server} workers need {n * per_server} cores; this process may use "
                f"{len(cores)}: lower --num-processes"
            )
        for env, share in zip(envs, _chunks(cores, n), strict=True):
            env[CORES_ENV] = ",".join(share)  # the server process's affinity (service/engine/vllm_main.py)
            # One list per worker of the server (its tensor-parallel ranks), as vLLM reads the variable
            # where it starts workers of its own.
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(w) for w in _chunks(share, per_server))
    return envs


@contextmanager
def local_replicas(
    model_dir: Path, opts: VLLMOptions, launch: LaunchOptions, log_dir: Path
) -> Iterator[list[VLLMServer]]:
    """N servers of `model_dir` on devices of their own, started together; all stopped when the block
    ends, and the started ones stopped when another fails to start."""
    n = replica_count(opts, launch)
    envs = replica_envs(n, opts.tensor_parallel_size or 1, is_cpu_build())
    started: list[VLLMServer] = []
    try:
        with ThreadPoolExecutor(n) as pool:
            futures = [
                pool.submit(start_server, model_dir, opts, log_dir, env=env, on_start=started.append)
                for env in envs
            ]
            servers = [f.result() for f in futures]
        yield servers
    finally:
        for server in started:
            server.stop()
