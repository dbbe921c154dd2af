"""Training jobs on a Ray cluster, for real: a local Ray head (`ray start --head`, this machine's CPUs)
and a running `rankloop serve`; reward and DPO jobs submitted through Ray's Jobs API from the CLI,
followed, registered with lineage; one cancelled mid-run, one whose worker is killed, one that goes on
while the service is killed and restarted. Its own tier (`make test-cluster`; CI runs it): a Ray head
costs the 12-minute `make test` too much."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from service.sdk import Rankloop
from tests.support import REPO
from tests.support.ray_head import ray_head
from tests.support.seeding import seed_rankings
from tests.support.servicectl import admin_headers, running_service, start_service

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
HF_OFFLINE = {"HF_HUB_OFFLINE": "1"}
QUICK = {"epochs": 1, "batch_size": 16, "max_length": 64, "logging_steps": 2}


@pytest.fixture(scope="module")
def ray_head_address() -> Iterator[str]:
    with ray_head() as address:
        yield address


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    d = tmp_path_factory.mktemp("cluster") / "data"
    with Store.open(d / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=40, annotators=2)
        create_snapshot(store, d, SnapshotFilters())
    return d


def rankloop(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "--data", str(data), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def ray_status(address: str, ref: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(ref.split("#", 1)[1]))


def job_row(data: Path, url: str, job_id: int) -> dict:
    return httpx.get(f"{url}/admin/jobs/{job_id}", headers=admin_headers(data), timeout=30).json()


def wait_for(check, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_reward_and_dpo_train_on_the_cluster(
    ray_head_address: str, data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    reward_cfg = tmp_path / "reward.yaml"
    reward_cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model), **QUICK}))
    dpo_cfg = tmp_path / "dpo.yaml"
    dpo_cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model), "max_steps": 6, "batch_size": 8}))
    on_ray = ["--launcher", "ray", "--ray-address", ray_head_address]
    with running_service(data) as url:
        trained = rankloop(data, *f"train reward --config {reward_cfg}".split(), *on_ray)
        assert trained.returncode == 0, trained.stderr + trained.stdout
        assert "(in the service)" in trained.stdout and "reward model #" in trained.stdout
        dpo = rankloop(data, *f"train policy --method dpo --config {dpo_cfg} --cpus 1".split(), *on_ray)
        assert dpo.returncode == 0, dpo.stderr + dpo.stdout
        policy_id = int(dpo.stdout.split("policy model #")[1].split()[0])
        shown = rankloop(data, "models", "show", str(policy_id))
        assert str(tiny_model) in shown.stdout  # lineage: policy -> its parent
        # The evaluation: both models' vLLM servers and the scoring on the cluster, the gate in the service.
        reward_id = trained.stdout.split("reward model #")[1].split()[0]
        flags = f"--reward-model {reward_id} --samples 1 --max-prompts 6 --min-prompts 5 --max-model-len 512"
        evaluated = rankloop(data, "evaluate", "policy", str(policy_id), *flags.split(), *on_ray)
        assert evaluated.returncode == 0, evaluated.stderr + evaluated.stdout
        assert "win rate" in evaluated.stdout and "under the reward model" in evaluated.stdout
        jobs = httpx.get(f"{url}/admin/jobs", headers=admin_headers(data), timeout=30).json()
        for job in jobs:
            row = job_row(data, url, job["id"])
            assert row["status"] == "succeeded" and row["launch_ref"].startswith("ray:"), row
            assert ray_status(ray_head_address, row["launch_ref"]) == "SUCCEEDED"
            assert Path(row["log_path"]).read_text().strip()  # the trainer's output, copied from Ray
        followed = rankloop(data, "jobs", "follow", str(jobs[0]["id"]), "--log")
        assert followed.returncode == 0 and "train_runtime" in followed.stdout + followed.stderr
        # Sampling: the vLLM server runs on the cluster, the service stores what it answers.
        before = samples(data, url)
        flags = f"--model {tiny_model} --k 2 --max-tokens 8 --max-model-len 512"
        sampled = rankloop(data, "sample", *flags.split(), *on_ray)
        assert sampled.returncode == 0, sampled.stderr + sampled.stdout
        assert "on the Ray cluster" in sampled.stdout and samples(data, url) > before


def samples(data: Path, url: str) -> int:
    return httpx.get(f"{url}/admin/status", headers=admin_headers(data), timeout=30).json()["samples"]


def test_cancel_worker_death_and_a_service_restart(
    ray_head_address: str, data: Path, tiny_model: Path
) -> None:
    long = {"base_model": str(tiny_model), **QUICK, "epochs": 60}
    launch = {"launcher": "ray", "ray_address": ray_head_address}
    proc, url = start_service(data, HF_OFFLINE)
    try:
        rl = Rankloop(url, key=admin_headers(data)["Authorization"].split()[1])

        def running_on_ray(job_id: int) -> bool:
            row = job_row(data, url, job_id)
            return bool(row["launch_ref"]) and ray_status(ray_head_address, row["launch_ref"]) == "RUNNING"

        # Cancel: the job says cancelled and the cluster stops its trainer.
        cancelled = rl.jobs_start(kind="reward", config=long, launch=launch)["job_id"]
        wait_for(lambda: running_on_ray(cancelled), "the trainer to run on Ray")
        assert rl.jobs_cancel(job_id=cancelled)["status"] == "cancelled"
        ref = job_row(data, url, cancelled)["launch_ref"]
        wait_for(lambda: ray_status(ray_head_address, ref) == "STOPPED", "Ray to stop the trainer", 60)

        # Worker death: the trainer is killed; the job fails with the cluster's reason.
        dies = rl.jobs_start(kind="reward", config=long, launch=launch)["job_id"]
        wait_for(lambda: running_on_ray(dies), "the trainer to run on Ray")
        found = subprocess.run(["pgrep", "-f", f"jobs/{dies}/config.yaml"], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        assert pids, "the trainer process was not found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: job_row(data, url, dies)["status"] == "failed", "the job to fail", 120)
        assert "Ray job" in job_row(data, url, dies)["error"]

        # A service killed mid-job: the next one follows the trainer again and registers its model.
        goes_on = rl.jobs_start(kind="reward", config={**long, "epochs": 4}, launch=launch)["job_id"]
        wait_for(lambda: running_on_ray(goes_on), "the trainer to run on Ray")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc, url = start_service(data, HF_OFFLINE, append=True)
        wait_for(
            lambda: job_row(data, url, goes_on)["status"] in ("succeeded", "failed"), "the job to end", 300
        )
        row = job_row(data, url, goes_on)
        assert row["status"] == "succeeded" and row["result_model_id"], row
    finally:
        proc.terminate()
        proc.wait(30)
