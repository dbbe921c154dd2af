"""Where a job's trainer may run, checked before the job exists (service/jobs/launch_check.py)."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from service.core.errors import UserError
from service.core.settings import LaunchOptions, Settings
from service.jobs.launch_check import check_launch
from service.jobs.launchers import accelerate_argv


class Sampling(BaseModel):
    models: list[Path]


class Cfg(BaseModel):
    snapshot: Path
    base_model: Path
    output_dir: Path


def test_launchers_refuse_what_they_cannot_run(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    shared = tmp_path / "shared"
    shared.mkdir()
    inside = Cfg(snapshot=shared / "s", base_model=shared / "m", output_dir=shared / "o")
    ray = LaunchOptions(launcher="ray", ray_address="http://head:8265", storage_root=shared)
    assert check_launch("reward", inside, ray, settings) is ray
    assert check_launch("sample", inside, LaunchOptions(), settings).launcher == "local"
    # Sampling and evaluation run their vLLM servers on the cluster; they have no trainer to run N times.
    sampling = Sampling(models=[shared / "m"])
    assert check_launch("sample", sampling, ray, settings) is ray
    assert check_launch("evaluate", inside, ray, settings) is ray
    # Under accelerate they run N data-parallel vLLM servers here: N must fit the devices.
    two = LaunchOptions(launcher="accelerate", num_processes=2)
    assert check_launch("sample", sampling, two, settings) is two
    odd = LaunchOptions(launcher="accelerate", num_processes=3)
    tp2 = Settings(data_dir=tmp_path / "data", vllm={"tensor_parallel_size": 2})
    with pytest.raises(UserError, match="--num-processes 3 does not divide into servers of .* 2 devices"):
        check_launch("evaluate", inside, odd, tp2)
    with pytest.raises(UserError, match="model .* lie outside it"):
        check_launch("sample", Sampling(models=[tmp_path / "m"]), ray, settings)
    with pytest.raises(UserError, match="needs the cluster's address"):
        check_launch("dpo", inside, LaunchOptions(launcher="ray"), settings)
    outside = inside.model_copy(update={"base_model": tmp_path / "elsewhere"})
    with pytest.raises(UserError, match="base_model .* lie outside it"):
        check_launch("dpo", outside, ray, settings)
    with pytest.raises(UserError, match="is not a directory"):
        check_launch("dpo", inside, ray.model_copy(update={"storage_root": tmp_path / "none"}), settings)
    with pytest.raises(ValueError, match="ray_address"):
        LaunchOptions(launcher="ray", ray_address="head:8265")  # not a URL


def test_accelerate_starts_n_processes() -> None:
    argv = accelerate_argv(
        "policy.dpo", Path("c.yaml"), LaunchOptions(launcher="accelerate", num_processes=4)
    )
    assert argv[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "4"] and "--multi_gpu" in argv
    assert argv[-4:] == ["-m", "policy.dpo", "--config", "c.yaml"]


def test_replicas_get_devices_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each data-parallel server sees only its share of the GPUs, and on the CPU build is bound to its
    share of the cores (one list per tensor-parallel worker); too few of either is a clear error."""
    from service.engine.data_parallel import replica_envs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    envs = replica_envs(2, 2, cpu_build=True)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["4,5", "6,7"]
    assert [e["VLLM_CPU_OMP_THREADS_BIND"] for e in envs] == ["0,1|2,3", "4,5|6,7"]
    assert [e["RANKLOOP_CPU_CORES"] for e in envs] == ["0,1,2,3", "4,5,6,7"]
    assert "VLLM_CPU_OMP_THREADS_BIND" not in replica_envs(4, 1, cpu_build=False)[3]
    with pytest.raises(UserError, match="3 servers of 2 GPUs need 6; CUDA_VISIBLE_DEVICES names 4"):
        replica_envs(3, 2, cpu_build=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(UserError, match="need 16 cores; this process may use 8"):
        replica_envs(8, 2, cpu_build=True)
