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
    for kind in ("sample", "evaluate"):
        with pytest.raises(UserError, match=f"the {kind} job drives vLLM servers"):
            check_launch(kind, sampling, LaunchOptions(launcher="accelerate"), settings)
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
