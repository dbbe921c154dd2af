"""Start and stop vLLM OpenAI-compatible servers, one subprocess per served checkpoint.

The server runs `service.engine.vllm_main` (vLLM's server, with its engine core forked: see there),
forked on CPU by a warm launcher that has imported vLLM already (service/engine/launcher.py), else as
`python -m service.engine.vllm_main`; either way in its own process group, so stopping it (SIGTERM, then
SIGKILL) also ends its EngineCore and worker processes. A server that fails to start
raises EngineStartError saying why, with the tail of its log.

    server = start_server(Path("models/tiny"), VLLMOptions(), log_dir=Path("logs"))
    try:
        print(server.base_url)   # http://127.0.0.1:PORT/v1, for the openai client
    finally:
        server.stop()
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from reward.checkpoint import CONFIG_FILE, require_model_dir
from service.core.procs import leashed, log_tail, start_group, stop_group
from service.core.settings import VLLMOptions
from service.engine.launcher import LaunchedProcess, LaunchError, launch

# Substrings of the server log -> what to tell the user. The first match wins.
DIAGNOSES = [
    ("address already in use", "the port is already in use by another program"),
    ("are not supported for now", "vLLM does not support this model's architecture"),
    ("not supported", "vLLM does not support this model or one of its settings"),
    (
        "head_size",
        "vLLM's attention does not support this model's head size (CPU needs head_dim 64, 80, 96, ...)",
    ),
    ("safetensors", "the model's weights could not be loaded"),
    ("tokenizer", "the model's tokenizer could not be loaded"),
    ("out of memory", "there is not enough memory for the model and its KV cache"),
]


class EngineStartError(RuntimeError):
    """A vLLM server could not be started; the message says why and shows its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def check_model_dir(model_dir: Path) -> dict:
    """The model's config.json, or EngineStartError saying what is wrong with the directory."""
    if not model_dir.exists():
        raise EngineStartError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise EngineStartError(f"{model_dir} is a file; --model wants a Hugging Face model directory")
    cfg_file = require_model_dir(model_dir, "--model", error=EngineStartError) / CONFIG_FILE
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EngineStartError(f"{cfg_file} is not valid JSON: {e}") from None
    if not cfg.get("architectures"):
        raise EngineStartError(
            f"{cfg_file} names no architectures, so vLLM cannot tell which model class to load"
        )
    return cfg


def diagnose(log_text: str) -> str:
    """A one-line reason from the log's error lines (or the whole tail when it has none)."""
    errors = [
        line
        for line in log_text.splitlines()
        if "error" in line.lower() and " INFO " not in line and " WARNING " not in line
    ]
    low = ("\n".join(errors) or log_text).lower()
    for needle, reason in DIAGNOSES:
        if needle in low:
            return reason
    return "the server exited during start-up"


@dataclass
class VLLMServer:
    model_dir: Path
    served_name: str
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen | LaunchedProcess = field(repr=False)  # the group's leader
    api_key: str = field(
        default="rankloop", repr=False
    )  # what its /v1 routes require (any, without VLLM_API_KEY)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after `grace_s`; wait until none remain."""
        stop_group(self.process, grace_s)


def engine_env(opts: VLLMOptions) -> dict[str, str]:
    """The environment for a vLLM engine (server or offline): ours, with the user's variables winning."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(opts.kv_cache_gib))))
    env.setdefault("HF_HUB_OFFLINE", "1")  # serve what is on disk; never reach for a hub
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    if opts.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(opts.cpu_reserved_cores)
    elif len(os.sched_getaffinity(0)) <= 4:  # the cores this process may use, not the machine's
        # Measured on 2 cores (bench/sampling.py): the engine on every core beats keeping one for HTTP.
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    preload = cpu_preload_libs()
    if preload and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = ":".join(preload)
    return env


def cpu_preload_libs() -> list[str]:
    """tcmalloc and Intel OpenMP, which vLLM's CPU backend asks to have preloaded (~8% more tokens/s
    measured here), when this is the CPU build of vLLM and the libraries are installed."""
    if not is_cpu_build():
        return []
    candidates = [
        Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
        Path("/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"),
        Path(sys.prefix) / "lib" / "libiomp5.so",
    ]
    return [str(p) for p in candidates if p.exists()]


def server_command(model_dir: Path, served_name: str, host: str, port: int, opts: VLLMOptions) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "service.engine.vllm_main",
        f"--engine-start={engine_start(opts)}",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        opts.dtype,
        "--seed",
        str(opts.seed),
        "--disable-uvicorn-access-log",
    ]
    if opts.enforce_eager:
        cmd.append("--enforce-eager")
    if opts.max_model_len:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    if opts.max_num_seqs:
        cmd += ["--max-num-seqs", str(opts.max_num_seqs)]
    if opts.max_num_batched_tokens:
        cmd += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]
    if opts.block_size:
        cmd += ["--block-size", str(opts.block_size)]
    if opts.gpu_memory_utilization:
        cmd += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.tensor_parallel_size:
        cmd += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if worker_in_engine_core(opts):
        cmd += ["--distributed-executor-backend", "uni"]
    return cmd + list(opts.extra_args)


def engine_start(opts: VLLMOptions) -> str:
    """How the server starts its engine core: `opts.engine_start` for a one-worker CPU server (the case
    service/engine/vllm_main.py measured), vLLM's own `spawn` otherwise (GPUs, several workers: vLLM
    sets OpenMP binding for its workers before starting them, which a fork would not see)."""
    return opts.engine_start if worker_in_engine_core(opts) else "spawn"


def worker_in_engine_core(opts: VLLMOptions) -> bool:
    """Whether the server runs its one worker inside the engine core's process. The CPU build starts it in a
    process of its own, which imports torch and vLLM a third time after the frontend and the engine core
    (~10 s here); vLLM's CPU platform turns `uni` back into `mp` unless VLLM_ENABLE_V1_MULTIPROCESSING=0
    (set with it in `_start`; the frontend still talks to the engine core over its socket, whatever that
    variable says). bench/engine_start.py measures both ways' start and tokens/s."""
    return (
        is_cpu_build()
        and (opts.tensor_parallel_size or 1) == 1
        and not any(a.split("=")[0] == "--distributed-executor-backend" for a in opts.extra_args)
    )


def start_server(
    model_dir: str | Path,
    opts: VLLMOptions,
    log_dir: Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    served_name: str | None = None,
    api_key: str | None = None,
    on_start: Callable[[VLLMServer], None] | None = None,
    env: dict[str, str] | None = None,
) -> VLLMServer:
    """Start a vLLM server for `model_dir` and return once /health answers. With `api_key` its /v1
    routes need that key (given through the environment, not the command line others can read).
    `env` goes into its environment over ours (the devices or cores of one data-parallel replica).
    `on_start` gets the server as soon as its process exists, so an owner can stop it even while
    it is still starting."""
    model_dir = Path(model_dir).resolve()
    check_model_dir(model_dir)
    if port is not None and not port_is_free(port, host):
        raise EngineStartError(
            f"port {port} on {host} is already in use; pick another or leave it unset for a free one"
        )
    # A free port we picked can be taken by another process before vLLM binds it: pick again.
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        try:
            return _start(
                model_dir,
                opts,
                log_dir,
                port or free_port(host),
                host,
                served_name or model_dir.name,
                api_key,
                on_start,
                env,
            )
        except EngineStartError as e:
            if attempt == attempts or "already in use" not in str(e):
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _start(
    model_dir: Path,
    opts: VLLMOptions,
    log_dir: Path,
    port: int,
    host: str,
    served_name: str,
    api_key: str | None = None,
    on_start: Callable[[VLLMServer], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> VLLMServer:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-{served_name}-{port}.log"
    env = {**engine_env(opts), **(extra_env or {})}
    env.pop("VLLM_SERVER_DEV_MODE", None)  # never the development routes (/collective_rpc, /sleep, weights)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if worker_in_engine_core(opts):
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    cmd = server_command(model_dir, served_name, host, port, opts)
    if warm_start(opts):
        log_path.touch()
        try:
            pid = launch(cmd[3:], env, log_path, opts.startup_timeout_s)  # after `python -m MODULE`
        except LaunchError as e:
            raise EngineStartError(f"vLLM server for {model_dir} could not be started: {e}") from None
        proc: subprocess.Popen | LaunchedProcess = leashed(LaunchedProcess(pid, log_path))
    else:
        proc = start_group(cmd, log_path, env)
    server = VLLMServer(model_dir, served_name, host, port, log_path, proc, api_key or "rankloop")
    if on_start is not None:
        on_start(server)
    try:
        _wait_healthy(server, opts.startup_timeout_s)
    except BaseException:
        server.stop(grace_s=5)
        raise
    lower_engine_priority(server, engine_nice(opts))
    return server


def warm_start(opts: VLLMOptions) -> bool:
    """Whether the server is forked by the warm launcher (service/engine/launcher.py): CPU builds, where it
    was measured, unless `vllm.warm_start` is off."""
    return opts.warm_start and is_cpu_build()


def engine_nice(opts: VLLMOptions) -> int:
    if opts.engine_nice is not None:
        return opts.engine_nice
    return 10 if is_cpu_build() else 0


def is_cpu_build() -> bool:
    """Whether the installed vLLM is its CPU build (vllm-cpu)."""
    try:
        metadata.distribution("vllm-cpu")
    except metadata.PackageNotFoundError:
        return False
    return True


def lower_engine_priority(server: VLLMServer, nice: int) -> None:
    """Every thread of the server's engine processes (not its HTTP frontend) at niceness `nice`.
    Why: on CPU the engine's OpenMP threads keep every core busy; at equal priority a request or a
    streamed token waits for the scheduler to take a core back from them at each process it passes
    (gateway, vLLM's frontend), measured as tens of ms of time to first token at 8 and 32 streams
    (bench/serve.py). Linux sets niceness per thread, and the engine's threads exist once it is healthy."""
    if nice <= 0:
        return
    try:
        engines = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.Error:  # the server is gone already: whoever supervises it sees that, not this
        return
    failed = []
    for proc in engines:
        try:
            threads = proc.threads()
        except psutil.Error:  # gone meanwhile
            continue
        for thread in threads:
            try:
                os.setpriority(
                    os.PRIO_PROCESS, thread.id, max(nice, os.getpriority(os.PRIO_PROCESS, thread.id))
                )
            except ProcessLookupError:  # a thread that just ended
                continue
            except OSError as e:
                failed.append(f"{thread.id}: {e.strerror}")
    if failed:
        print(
            f"rankloop: could not lower the priority of {len(failed)} engine threads of {server.served_name} "
            f"({failed[0]}); HTTP may wait for the engine",
            file=sys.stderr,
        )


def _wait_healthy(server: VLLMServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if not server.alive():
                tail = log_tail(server.log_path)
                raise EngineStartError(
                    f"vLLM server for {server.model_dir} failed to start: {diagnose(tail)} "
                    f"(exit code {server.process.returncode}). Last lines of {server.log_path}:\n{tail}"
                )
            try:
                if http.get(server.health_url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise EngineStartError(
        f"vLLM server for {server.model_dir} did not answer {server.health_url} within {timeout_s:.0f} s "
        f"(raise vllm.startup_timeout_s if the model is large). Last lines of {server.log_path}:\n"
        f"{log_tail(server.log_path)}"
    )
