"""Sampling and evaluation under `--launcher accelerate`, for real, from a running `rankloop serve`: two
data-parallel vLLM servers of the tiny model here, each bound to a core of its own (the CPU build's
VLLM_CPU_OMP_THREADS_BIND; on a GPU host, a GPU of its own), the requests dealt between them, and the
evaluation's scoring and KL in two `accelerate launch` processes, each on half of the comparisons. The
figures equal those of the same evaluation in one process. In the cluster tier (`make test-cluster`):
four vLLM starts cost the 12-minute `make test` too much."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
import yaml

from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from service.engine.launcher import EXIT_LINE
from service.sdk import Rankloop
from tests.cluster.test_ray_jobs import QUICK, job_row, rankloop, samples
from tests.support.seeding import seed_rankings
from tests.support.servicectl import admin_headers, running_service

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two servers need a core each"),
]
TWO = ["--launcher", "accelerate", "--num-processes", "2"]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    with Store.open(d / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=40, annotators=2)
        create_snapshot(store, d, SnapshotFilters())
    return d


def test_sampling_and_evaluation_on_two_data_parallel_servers(
    data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    reward_cfg = tmp_path / "reward.yaml"
    reward_cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model), **QUICK}))
    dpo_cfg = tmp_path / "dpo.yaml"
    dpo_cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model), "max_steps": 4, "batch_size": 8}))
    logs = data / "logs"
    with running_service(data) as url:
        # One model sampled in the service first: its server stays, idle, until replicas need the devices.
        flags = f"--model {tiny_model} --max-tokens 8 --max-model-len 512"
        assert rankloop(data, "sample", *flags.split(), "--k", "1").returncode == 0
        (kept,) = logs.glob("vllm-*.log")
        before = samples(data, url)
        sampled = rankloop(data, "sample", *flags.split(), "--k", "2", *TWO)
        assert sampled.returncode == 0, sampled.stderr + sampled.stdout
        assert "on data-parallel vLLM servers" in sampled.stdout
        found = re.search(r"from 2 servers \((\d+), (\d+) requests\)", sampled.stdout)
        assert found and all(int(n) > 0 for n in found.groups()), sampled.stdout
        assert EXIT_LINE in kept.read_text()  # the idle server was stopped first
        assert samples(data, url) > before
        # Each server on a core of its own, as the OS reported its affinity once set.
        servers = sorted(set(logs.glob("vllm-*.log")) - {kept})
        bound = sorted(
            re.findall(r"this server runs on cores \[(\d+)\]", "".join(p.read_text() for p in servers))
        )
        assert len(servers) == 2 and bound == ["0", "1"], bound

        trained = rankloop(data, *f"train reward --config {reward_cfg}".split())
        assert trained.returncode == 0, trained.stderr + trained.stdout
        reward_id = trained.stdout.split("reward model #")[1].split()[0]
        dpo = rankloop(data, *f"train policy --method dpo --config {dpo_cfg}".split())
        assert dpo.returncode == 0, dpo.stderr + dpo.stdout
        policy_id = int(dpo.stdout.split("policy model #")[1].split()[0])
        flags = f"--reward-model {reward_id} --samples 1 --max-prompts 8 --min-prompts 5 --max-model-len 512"
        # Under accelerate: both models sampled by two servers, scored by two processes ...
        on_two = rankloop(data, "evaluate", "policy", str(policy_id), *flags.split(), *TWO)
        assert on_two.returncode == 0, on_two.stderr + on_two.stdout
        # ... then the same evaluation in one process, on the samples the first one stored.
        alone = rankloop(data, "evaluate", "policy", str(policy_id), *flags.split())
        assert alone.returncode == 0, alone.stderr + alone.stdout
        jobs = httpx.get(f"{url}/admin/jobs", headers=admin_headers(data), timeout=30).json()
        rows = [job_row(data, url, j["id"]) for j in jobs if j["kind"] == "evaluate"]
        assert [r["launch"]["launcher"] for r in sorted(rows, key=lambda r: r["id"])] == [
            "accelerate",
            "local",
        ]
        rl = Rankloop(url, key=admin_headers(data)["Authorization"].split()[1])
        evaluations = rl.models_show(model_id=policy_id)["metrics"]["evaluations"]
    two, one = evaluations[-2], evaluations[-1]
    assert (two["processes"], one["processes"]) == (2, 1)
    assert two["comparisons"] == one["comparisons"] >= 5
    assert two["judges"]["reward"]["win_rate"] == one["judges"]["reward"]["win_rate"]
    assert two["judges"]["reward"]["mean_candidate"] == pytest.approx(
        one["judges"]["reward"]["mean_candidate"], abs=1e-4
    )
    assert two["kl"]["estimate"] == pytest.approx(one["kl"]["estimate"], abs=1e-3)
    assert two["kl"]["responses"] == one["kl"]["responses"] == one["comparisons"]
