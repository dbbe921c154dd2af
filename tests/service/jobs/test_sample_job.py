"""Sampling as a job in a running service: the command follows it (Ctrl-C leaves it running),
new tasks reach a logged-in annotator without a restart, and a cancelled job keeps what it
stored while a rerun completes it. The service's vLLM server goes when the service stops."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.cli import client as cli_client
from service.cli.main import main
from service.core.store import Store
from tests.support.procs import vllm_processes
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow


def test_sampling_jobs_in_the_service(tmp_path: Path, tiny_model: Path, capsys, monkeypatch) -> None:
    data = tmp_path / "data"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Tell me about thing number {i}.\n" for i in range(24)))
    system = tmp_path / "system.yaml"
    system.write_text("brief: Answer in one short sentence.\nfriendly: Answer in a warm and friendly way.\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("alice-password\n"))
    assert main(["--data", str(data), "annotators", "add", "alice", "--password-stdin"]) == 0
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        # From a second shell, while the service holds the data directory:
        assert main(["--data", str(data), "prompts", "add", str(prompts)]) == 0
        assert main(["--data", str(data), "system-prompts", "add", str(system)]) == 0
        token = httpx.post(
            f"{url}/api/annotate/login", json={"name": "alice", "password": "alice-password"}
        ).json()["token"]
        alice = {"Authorization": f"Bearer {token}"}
        assert (
            httpx.get(f"{url}/api/annotate/next", headers=alice).json()["task"] is None
        )  # nothing to rank yet
        capsys.readouterr()

        # Ctrl-C while following: the job keeps running in the service, and the command says how to follow it.
        sleeps, real_sleep = iter([KeyboardInterrupt]), time.sleep

        def interrupted_sleep(s: float) -> None:
            error = next(sleeps, None)
            if error:
                raise error()
            real_sleep(s)

        monkeypatch.setattr(cli_client.time, "sleep", interrupted_sleep)
        sample = [
            "--data",
            str(data),
            "sample",
            "--model",
            str(tiny_model),
            "--k",
            "2",
            "--max-tokens",
            "16",
            "--dtype",
            "float32",
        ]
        assert main(sample) == 130
        err = capsys.readouterr().err
        job_id = int(err.split("rankloop jobs follow ")[1].split("`")[0])
        assert "keeps running in the service" in err
        assert main(["--data", str(data), "jobs", "follow", str(job_id)]) == 0
        out = capsys.readouterr().out
        assert "96 new samples" in out and "built 48 ranking tasks" in out, out
        task = httpx.get(f"{url}/api/annotate/next", headers=alice).json()["task"]
        assert task is not None and len(task["candidates"]) == 2  # in alice's queue, no restart

        # A longer run, cancelled once some samples are stored; the rerun generates only the rest.
        longer = [
            "--data",
            str(data),
            "sample",
            "--model",
            str(tiny_model),
            "--k",
            "8",
            "--max-tokens",
            "48",
            "--concurrency",
            "2",
            "--dtype",
            "float32",
        ]
        started = httpx.post(
            f"{url}/admin/jobs/sample",
            headers=admin_headers(data),
            timeout=30,
            json={
                "models": [str(tiny_model)],
                "k": 8,
                "params": {"max_tokens": 48},
                "concurrency": 2,
                "vllm": {"dtype": "float32"},
            },
        )
        assert started.status_code == 200, started.text
        cancel_id = started.json()["job_id"]
        deadline = time.monotonic() + 300
        while httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["samples"] < 96 + 32:
            assert time.monotonic() < deadline, "the sampling job stored nothing"
            time.sleep(0.2)
        assert main(["--data", str(data), "jobs", "cancel", str(cancel_id)]) == 0
        assert f"job {cancel_id} cancelled" in capsys.readouterr().out
        kept = httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["samples"]
        assert 96 + 32 <= kept < 96 + 384, kept
        assert main(longer) == 0
        out = capsys.readouterr().out
        assert f"{384 - (kept - 96)} new samples ({kept - 96} of 384 were already stored)" in out, out
        jobs = {j["id"]: j for j in httpx.get(f"{url}/admin/jobs", headers=admin_headers(data)).json()}
        assert jobs[cancel_id]["status"] == "cancelled" and jobs[job_id]["status"] == "succeeded"
        assert main(["--data", str(data), "jobs", "cancel", str(job_id)]) == 2  # finished: nothing to cancel
        assert "already succeeded" in capsys.readouterr().err
    assert vllm_processes(data / "logs") == set(), "the service's vLLM server outlived the service"
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM samples") == 96 + 384
        assert (
            store.scalar(
                "SELECT count(DISTINCT (prompt_id, system_prompt_id, model_id, params_hash, "
                "sample_index)) FROM samples"
            )
            == 96 + 384
        )
