"""Reward training as jobs: registration and the promotion gate, killed jobs, bad configs,
manual promotion, scoring and active learning (locally and through the service)."""

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from annotator import queue
from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.settings import AnnotationOptions, load_settings
from service.core.store import Store
from service.engine.supervisor import EngineSupervisor
from service.jobs.runner import JobRunner
from tests.support.seeding import seed_rankings, seed_tasks
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("jobs") / "data"
    with Store.open(d / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=40, annotators=2)
    assert main(["--data", str(d), "snapshot"]) == 0
    return d


def job_config(tmp: Path, tiny_model: Path, **fields) -> Path:
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump({"base_model": str(tiny_model), "logging_steps": 5, **fields}))
    return path


def models(data: Path) -> list[dict]:
    with Store.open(data / "rankloop.duckdb") as store:
        return store.query("SELECT * FROM models WHERE kind = 'reward' ORDER BY id")


@pytest.fixture(scope="module")
def active_id(data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A reward model trained by `rankloop train reward` that passed the gate."""
    good = job_config(tmp_path_factory.mktemp("good"), tiny_model, epochs=4)
    assert main(["--data", str(data), "train", "reward", "--config", str(good)]) == 0
    (first,) = models(data)
    assert first["status"] == "active" and first["status_reason"].startswith(
        "gate passed: first reward model"
    )
    assert first["snapshot_id"] and first["parent_id"]
    return first["id"]


def test_gate_refuses_a_worse_model_and_promotion_overrides(
    active_id: int, data: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    # A worse model (one step at a tiny learning rate) stays a candidate, and the registry says why.
    bad = job_config(tmp_path, tiny_model, max_steps=1, learning_rate=1e-7)
    assert main(["--data", str(data), "train", "reward", "--mode", "pairwise", "--config", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "gate refused" in out and f"side by side with the active reward model #{active_id}" in out
    first, second = models(data)
    assert (first["status"], second["status"]) == ("active", "candidate")
    assert f"< active #{active_id}'s" in second["status_reason"]
    # Overriding the gate by hand is recorded too.
    assert (
        main(
            ["--data", str(data), "models", "promote", str(second["id"]), "--reason", "testing the override"]
        )
        == 0
    )
    first, second = models(data)
    assert (first["status"], second["status"]) == ("retired", "active")
    assert second["status_reason"] == "promoted by hand: testing the override"
    assert first["status_reason"] == f"replaced by #{second['id']}"
    assert main(["--data", str(data), "models", "promote", str(active_id), "--reason", "back"]) == 0
    # A job may not write over a registered model.
    over = job_config(tmp_path, tiny_model, output_dir=first["path"])
    assert main(["--data", str(data), "train", "reward", "--config", str(over)]) == 2
    assert "holds a registered model" in capsys.readouterr().err


def test_failed_registration_registers_nothing(
    active_id: int, data: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    """The gate needs the active model; if its directory is gone, the job fails and leaves no model."""
    active_path = Path(next(m for m in models(data) if m["id"] == active_id)["path"])
    hidden = active_path.with_name(active_path.name + "-moved")
    active_path.rename(hidden)
    try:
        before = len(models(data))
        assert (
            main(
                [
                    "--data",
                    str(data),
                    "train",
                    "reward",
                    "--config",
                    str(job_config(tmp_path, tiny_model, max_steps=2)),
                ]
            )
            == 1
        )
        assert "registering the model failed" in capsys.readouterr().err
        assert len(models(data)) == before
    finally:
        hidden.rename(active_path)


def test_bad_config_is_refused_field_by_field(data: Path, tiny_model: Path, tmp_path: Path, capsys) -> None:
    bad = job_config(tmp_path, tiny_model, epochs=-1, mode="triangular")
    assert main(["--data", str(data), "train", "reward", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "epochs:" in err and "mode:" in err and "'listwise' or 'pairwise'" in err
    missing = job_config(tmp_path, tmp_path / "no-model")
    assert main(["--data", str(data), "train", "reward", "--config", str(missing)]) == 2
    assert "is not a Hugging Face model directory" in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM jobs WHERE config LIKE '%triangular%'") == 0


def test_killed_job_registers_nothing(data: Path, tiny_model: Path, tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": str(data)}, environ={})
    with Store.open(data / "rankloop.duckdb") as store:
        before = store.scalar("SELECT count(*) FROM models")
        runner = JobRunner(store, settings, EngineSupervisor(settings))
        job_id = runner.submit(
            "reward", yaml.safe_load(job_config(tmp_path, tiny_model, epochs=200).read_text())
        )

        def kill_once_training() -> None:
            progress = data / "jobs" / str(job_id) / "progress.json"
            deadline = time.monotonic() + 120
            while not progress.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            pid = store.scalar("SELECT worker_pid FROM jobs WHERE id = ?", [job_id])
            os.killpg(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_training)
        killer.start()
        job = runner.wait(job_id)
        killer.join()
        assert (
            job["status"] == "failed"
            and "killed by signal 9" in job["error"]
            and "nothing was registered" in job["error"]
        )
        assert job["result_model_id"] is None
        assert store.scalar("SELECT count(*) FROM models") == before


def test_scoring_and_active_learning(active_id: int, data: Path, capsys) -> None:
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=6, k=4, styles=("brief", "detailed"), seed=9)  # 12 open tasks
    assert main(["--data", str(data), "prioritize"]) == 0
    assert f"set the priority of 12 open tasks from reward model #{active_id}" in capsys.readouterr().out
    with Store.open(data / "rankloop.duckdb") as store:
        prios = store.query("SELECT id, priority FROM tasks WHERE priority > 0 ORDER BY priority DESC, id")
        assert len(prios) == 12 and all(0 < p["priority"] <= 1 for p in prios)
        who = add_annotator(store, "fresh", "simulated")
        assert queue.next_task(store, who, AnnotationOptions(gold_rate=0))["task_id"] == prios[0]["id"]
    with running_service(data) as url:
        r = httpx.post(
            f"{url}/admin/rewards",
            headers=admin_headers(data),
            timeout=60,
            json={"prompt": "Tell me about cats.", "responses": ["Cats have paws.", "Cats purr. " * 8]},
        )
        assert r.status_code == 200 and len(r.json()["scores"]) == 2
        assert (
            httpx.post(
                f"{url}/admin/rewards", headers=admin_headers(data), json={"prompt": "x", "responses": []}
            ).status_code
            == 422
        )
        assert main(["--data", str(data), "prioritize"]) == 0  # through the running service
        assert "set the priority of 12 open tasks" in capsys.readouterr().out  # a lease does not close a task


def test_training_job_runs_inside_a_running_service(
    data: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    with running_service(data) as url:
        cfg = job_config(tmp_path, tiny_model, epochs=1)
        assert main(["--data", str(data), "train", "reward", "--config", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "(in the service)" in out and "succeeded" in out
        jobs = httpx.get(f"{url}/admin/jobs", headers=admin_headers(data)).json()
        assert jobs[-1]["status"] == "succeeded" and jobs[-1]["result_model_id"]
        bad = httpx.post(
            f"{url}/admin/jobs",
            headers=admin_headers(data),
            json={"kind": "reward", "config": {"base_model": str(tiny_model), "epochs": 0}},
        )
        assert bad.status_code == 422 and "epochs" in bad.json()["error"]


def test_reward_model_judge_agrees_with_people_and_snapshots_leave_it_out(
    active_id: int, data: Path, capsys
) -> None:
    """Runs last in this module: the judge ranks every task beside the simulated people."""
    with Store.open(data / "rankloop.duckdb") as store:
        tasks = store.scalar("SELECT count(*) FROM tasks")
        people_before = store.scalar("SELECT count(*) FROM rankings")
    assert main(["--data", str(data), "judge", "--reward-model", str(active_id)]) == 0
    assert f"judge 'judge-reward-{active_id}': ranked {tasks} tasks, skipped 0" in capsys.readouterr().out
    with Store.open(data / "rankloop.duckdb") as store:
        from annotator.quality import judge_report

        people, judge = judge_report(store)
        assert people["role"] == "people" and judge["annotator"] == f"judge-reward-{active_id}"
        # Chance is 0.5; the reward model learned the people's hidden preference.
        assert judge["agreement_with_people"] > 0.6 and judge["pairs"] >= people_before - 12, judge
        assert store.scalar("SELECT role FROM annotators WHERE name = ?", [judge["annotator"]]) == "judge"
    # Snapshots leave judges out unless asked: without them the data is what it was before the judge ran.
    assert main(["--data", str(data), "snapshot"]) == 0
    assert "unchanged (same data as before)" in capsys.readouterr().out
    assert main(["--data", str(data), "snapshot", "--include-judges"]) == 0
    out = capsys.readouterr().out
    assert "written" in out and f"  {people_before + tasks} rankings" in out, out
