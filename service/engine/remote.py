"""A vLLM server on a Ray cluster for a sampling job: the server runs where the GPUs are, the service
sends it the prompts and stores the answers as they come, as it does with a server of its own.

    with ray_server(model_dir, vllm_opts, launch, exchange_dir, log_path, job_id) as server:
        ...  # server.base_url, server.served_name, server.api_key

The server is a Ray job (`python -m service.engine.remote_serve`) asking for the launch options' GPUs,
CPUs and memory; it writes the address it listens on into `exchange_dir` (storage both sides see) and
requires a key made for this job, since it listens on the worker's network. Leaving the block stops the
Ray job; a server that dies while starting fails with the cluster's reason and the end of its log.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.core.procs import log_tail
from service.core.settings import LaunchOptions, VLLMOptions
from service.engine.ray_jobs import RayHandle
from service.engine.server import EngineStartError, check_model_dir


@dataclass(frozen=True)
class RemoteServer:
    served_name: str
    base_url: str
    api_key: str
    ref: str


@contextmanager
def ray_server(
    model_dir: Path,
    opts: VLLMOptions,
    launch: LaunchOptions,
    exchange_dir: Path,
    log_path: Path,
    job_id: int,
) -> Iterator[RemoteServer]:
    assert launch.ray_address is not None  # checked when the job was submitted
    check_model_dir(model_dir)
    exchange_dir.mkdir(parents=True, exist_ok=True)
    announce = exchange_dir / f"server-{uuid.uuid4().hex[:8]}.json"
    served_name, key = model_dir.name, secrets.token_urlsafe(24)
    handle = RayHandle(launch.ray_address, f"rankloop-{job_id}-vllm-{uuid.uuid4().hex[:8]}", log_path)
    argv = [launch.python or sys.executable, "-m", "service.engine.remote_serve", "--announce", str(announce)]
    argv += ["--model", str(model_dir), "--served-name", served_name, "--options", opts.model_dump_json()]
    handle.submit(argv, {"HF_HUB_OFFLINE": "1", "VLLM_API_KEY": key}, launch, what="vllm")
    try:
        base = _wait_ready(handle, announce, key, opts.startup_timeout_s)
        yield RemoteServer(served_name, f"{base}/v1", key, handle.ref)
    finally:
        handle.stop()
        handle.sync_log()
        announce.unlink(missing_ok=True)


def _wait_ready(handle: RayHandle, announce: Path, key: str, timeout_s: float) -> str:
    """The server's base address once it answers /health; EngineStartError when it ends or times out."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            if handle.poll() is not None:
                handle.sync_log()
                raise EngineStartError(
                    f"the vLLM server on the cluster ended while starting: {handle.reason()}; last lines of "
                    f"{handle.log_path}:\n{log_tail(handle.log_path, 15)}"
                )
            if announce.exists():
                where = json.loads(announce.read_text())
                base = f"http://{where['host']}:{where['port']}"
                try:
                    if http.get(f"{base}/health").status_code == 200:
                        return base
                except httpx.HTTPError:
                    pass
            handle.sync_log()
            time.sleep(0.5)
    raise EngineStartError(
        f"the vLLM server on the cluster did not answer within {timeout_s:.0f} s (vllm.startup_timeout_s); "
        f"last lines of {handle.log_path}:\n{log_tail(handle.log_path, 15)}"
    )
