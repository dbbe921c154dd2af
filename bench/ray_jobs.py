"""What running a training job on a Ray cluster costs against running it here, on the same work.

Starts a local Ray head (this machine's 2 CPUs) and `rankloop serve`, then runs the same reward
training job (the tiny model, one snapshot, a fixed number of steps) `--runs` times with each
launcher, alternating: `local` (a child process of the service; the baseline, in the same run) and
`ray` (submitted through Ray's Jobs API). Per launcher: the job's wall time from `jobs.start` to
`succeeded`, and for Ray the seconds until the cluster reported the trainer running (submission)
and until the trainer's first progress (start-up: the worker's Python, imports, the model).

    python -m bench.ray_jobs [--runs 3] [--json bench/ray_jobs.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

# bench/ holds scripts named like the packages (policy.py, reward.py): the repository comes first instead.
from policy.config import PretrainConfig
from policy.pretrain import main as pretrain
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from service.sdk import Rankloop
from tests.support.ray_head import ray_head
from tests.support.seeding import seed_rankings
from tests.support.servicectl import admin_headers, running_service

CONFIG = {"max_steps": 30, "batch_size": 8, "max_length": 64, "logging_steps": 5}


def one_job(rl: Rankloop, config: dict, launch: dict, address: str | None) -> dict:
    """Wall seconds of one job, and for Ray when the cluster ran it and when it first made progress."""
    t0 = time.perf_counter()
    job_id = rl.jobs_start(kind="reward", config=config, launch=launch)["job_id"]
    submitted = time.perf_counter() - t0
    running = progressed = None
    while (job := rl.jobs_show(job_id=job_id))["status"] not in ("succeeded", "failed", "cancelled"):
        now = time.perf_counter() - t0
        if running is None and address and job.get("launch_ref"):
            from ray.job_submission import JobSubmissionClient

            status = JobSubmissionClient(address).get_job_status(job["launch_ref"].split("#", 1)[1])
            running = now if str(status) == "RUNNING" else None
        if progressed is None and job["progress"] > 0:
            progressed = now
        time.sleep(0.1)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
    return {
        "wall_s": time.perf_counter() - t0,
        "start_call_s": submitted,
        "running_on_cluster_s": running,
        "first_progress_s": progressed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="jobs per launcher")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        base = pretrain(  # inside the data directory, where jobs may read
            PretrainConfig(output_dir=data / "models" / "base", size="tiny", steps=40, n_transcripts=600)
        )
        with Store.open(data / "rankloop.duckdb") as store:
            seed_rankings(store, n_prompts=60, annotators=2)
            create_snapshot(store, data, SnapshotFilters())
        config = {"base_model": str(base), **CONFIG}
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        with ray_head() as address, running_service(data) as url:
            rl = Rankloop(url, key=admin_headers(data)["Authorization"].split()[1])
            for _ in range(args.runs):  # alternating, so that drift on the machine hits both alike
                runs["local"].append(one_job(rl, config, {"launcher": "local"}, None))
                runs["ray"].append(one_job(rl, config, {"launcher": "ray", "ray_address": address}, address))
    summary = {
        name: {
            key: statistics.median(r[key] for r in rows if r[key] is not None)
            for key in ("wall_s", "start_call_s", "first_progress_s")
        }
        | (
            {"running_on_cluster_s": statistics.median(r["running_on_cluster_s"] for r in rows)}
            if name == "ray"
            else {}
        )
        for name, rows in runs.items()
    }
    summary["ray_over_local_wall"] = summary["ray"]["wall_s"] / summary["local"]["wall_s"]
    summary["ray_extra_start_s"] = summary["ray"]["first_progress_s"] - summary["local"]["first_progress_s"]
    for name in ("local", "ray"):
        s = summary[name]
        print(
            f"{name:5s}: wall {s['wall_s']:6.1f} s, first progress after {s['first_progress_s']:5.1f} s"
            + (f", running on the cluster after {s['running_on_cluster_s']:4.1f} s" if name == "ray" else "")
        )
    print(
        f"ray / local wall time {summary['ray_over_local_wall']:.2f}x; Ray adds "
        f"{summary['ray_extra_start_s']:.1f} s before the trainer's first step (medians of {args.runs})"
    )
    if args.json:
        args.json.write_text(json.dumps({"config": CONFIG, "runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
