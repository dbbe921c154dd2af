"""Training jobs: a trainer runs as its own subprocess; the `jobs` table tracks it.

`rankloop train reward` (or `POST /admin/jobs/reward` on a running service) validates
the job's config before anything starts (field-level errors), records a `queued` job,
then runs `python -m reward.train --config <job dir>/config.yaml` with its log in the
job directory, mirroring progress into the row. Only a job that exits cleanly and
wrote its metrics registers a model (as a `candidate`, then the promotion gate
decides); a failed or killed job registers nothing and leaves the reason in the row.
A job whose process disappeared (the machine rebooted, the service was killed) is
marked failed the next time jobs are looked at.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings
from service.configfile import read_yaml, validate
from service.engine import log_tail
from service.snapshots import latest_snapshot
from service.store import Store, StoreError

JOB_KINDS = ("reward",)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale(store: Store) -> None:
    """Mark jobs whose process is gone as failed (the trainer while running, the process that
    registers the result while registering)."""
    for job in store.query("SELECT id, pid FROM jobs WHERE status IN ('running', 'registering')"):
        if not _pid_alive(job["pid"]):
            _fail(store, job["id"], "interrupted: the process running this job is gone; nothing was registered")


def stop_running(store: Store, why: str) -> None:
    """Kill the trainers of running jobs (their process groups) and mark the jobs failed."""
    for job in store.query("SELECT id, pid FROM jobs WHERE status = 'running'"):
        if _pid_alive(job["pid"]):
            try:
                os.killpg(job["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _fail(store, job["id"], f"interrupted: {why}; nothing was registered")


def _check_output_dir(store: Store, out: Path) -> None:
    """A job writes into a fresh directory: never over a registered model or other files."""
    if store.scalar("SELECT count(*) FROM models WHERE path = ?", [str(out.resolve())]):
        raise StoreError(f"output_dir {out} holds a registered model; a job never overwrites one. Pick another")
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"output_dir {out} exists and is not empty; pick a new directory (or leave it unset)")


def reward_config(store: Store, settings: Settings, file: Path | None, overrides: dict[str, Any]):
    """The reward job's config: file values, then flags, then defaults from the data directory
    (the newest snapshot, the newest fine-tuned or pretrained checkpoint); validated before
    anything runs."""
    from reward.train import RewardTrainConfig

    values = {**(read_yaml(file) if file else {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "snapshot" not in values:
        values["snapshot"] = latest_snapshot(store)
        if values["snapshot"] is None:
            raise StoreError("no snapshot to train on: take one with `rankloop snapshot` (or set snapshot: in the config)")
    if "base_model" not in values:
        values["base_model"] = store.scalar(
            "SELECT path FROM models WHERE kind IN ('sft', 'pretrained') ORDER BY id DESC LIMIT 1")
        if values["base_model"] is None:
            raise StoreError("no base checkpoint: set base_model: in the config, or sample from a model first")
    values.setdefault("output_dir", str(settings.data_dir / "models" / "reward-next"))
    cfg = validate(RewardTrainConfig, values, str(file) if file else "flags")
    if cfg.output_dir.name != "reward-next":
        _check_output_dir(store, cfg.output_dir)
    if not (Path(cfg.base_model) / "config.json").is_file():
        raise StoreError(f"base_model {cfg.base_model} is not a Hugging Face model directory (no config.json)")
    snap = Path(cfg.snapshot)
    if not ((snap / "rankings.parquet").is_file() or (snap.is_file() and snap.suffix == ".parquet")):
        raise StoreError(f"snapshot {cfg.snapshot} is not a snapshot: expected rankings.parquet (`rankloop snapshot`)")
    return cfg


def create_job(store: Store, settings: Settings, kind: str, cfg) -> int:
    """Record a queued job and write its config file into its own directory."""
    if kind not in JOB_KINDS:
        raise StoreError(f"unknown job kind {kind!r}; valid: {', '.join(JOB_KINDS)}")
    with store.write() as cur:
        job_id = cur.execute("INSERT INTO jobs (kind, config) VALUES (?, ?) RETURNING id",
                             [kind, cfg.model_dump_json()]).fetchone()[0]
    job_dir = settings.data_dir / "jobs" / str(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    if cfg.output_dir.name == "reward-next":  # the default: one directory per job
        cfg = cfg.model_copy(update={"output_dir": settings.data_dir / "models" / f"reward-{job_id}"})
        _check_output_dir(store, cfg.output_dir)
    cfg = cfg.model_copy(update={"progress_file": job_dir / "progress.json"})
    (job_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    with store.write() as cur:
        cur.execute("UPDATE jobs SET config = ?, log_path = ?, output_dir = ? WHERE id = ?",
                    [cfg.model_dump_json(), str(job_dir / "train.log"), str(cfg.output_dir), job_id])
    return job_id


def run_job(store: Store, settings: Settings, job_id: int,
            on_progress: Callable[[int, int], None] | None = None, min_accuracy: float = 0.55) -> dict:
    """Run a queued job to its end; returns its final row."""
    from reward.train import RewardTrainConfig

    job = store.query("SELECT * FROM jobs WHERE id = ?", [job_id])[0]
    cfg = RewardTrainConfig.model_validate_json(job["config"])
    job_dir = Path(job["log_path"]).parent
    with open(job["log_path"], "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "reward.train", "--config", str(job_dir / "config.yaml")],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    with store.write() as cur:
        cur.execute("UPDATE jobs SET status = 'running', started_at = now(), pid = ? WHERE id = ?", [proc.pid, job_id])
    try:
        while proc.poll() is None:
            _mirror_progress(store, job_id, cfg.progress_file, on_progress)
            time.sleep(0.5)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # interrupted: the trainer must not outlive its job
        proc.wait()
        _fail(store, job_id, "interrupted while running; nothing was registered")
        raise
    _mirror_progress(store, job_id, cfg.progress_file, on_progress)
    metrics_file = Path(cfg.output_dir) / "metrics.json"
    if proc.returncode != 0 or not metrics_file.exists():
        why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}" if proc.returncode else "no metrics.json was written")
        _fail(store, job_id, f"{why}; nothing was registered. Last lines of {job['log_path']}:\n"
                             f"{log_tail(Path(job['log_path']), 15)}")
    else:
        with store.write() as cur:  # this process now owns the job until it is registered
            cur.execute("UPDATE jobs SET status = 'registering', pid = ? WHERE id = ?", [os.getpid(), job_id])
        try:
            _register(store, job_id, cfg, json.loads(metrics_file.read_text()), min_accuracy)
        except Exception as e:  # the transaction rolled back: no model, and the job says why
            _fail(store, job_id, f"trained, but registering the model failed: {type(e).__name__}: {e}")
    return store.query("SELECT * FROM jobs WHERE id = ?", [job_id])[0]


def _mirror_progress(store: Store, job_id: int, progress_file: Path | None, on_progress) -> None:
    if not progress_file or not progress_file.exists():
        return
    try:
        p = json.loads(progress_file.read_text())
    except ValueError:
        return  # caught mid-write; the next poll reads it
    with store.write() as cur:
        cur.execute("UPDATE jobs SET progress = ? WHERE id = ?", [p["step"] / max(p["total"], 1), job_id])
    if on_progress:
        on_progress(p["step"], p["total"])


def _fail(store: Store, job_id: int, error: str) -> None:
    with store.write() as cur:
        cur.execute("UPDATE jobs SET status = 'failed', finished_at = now(), error = ? WHERE id = ?", [error, job_id])


def _register(store: Store, job_id: int, cfg, metrics: dict, min_accuracy: float) -> None:
    """Judge the trained model at the gate, then register it and finish the job in one transaction."""
    from service.promotion import reward_verdict

    verdict = reward_verdict(store, Path(cfg.output_dir), metrics, Path(cfg.snapshot), min_accuracy)
    if verdict.compared_to_active:
        metrics = {**metrics, "compared_to_active": verdict.compared_to_active}
    base = str(Path(cfg.base_model).resolve())
    with store.write() as cur:
        parent = cur.execute("SELECT id FROM models WHERE path = ? ORDER BY id DESC LIMIT 1", [base]).fetchone()
        parent_id = parent[0] if parent else cur.execute(
            "INSERT INTO models (kind, name, path) VALUES ('pretrained', ?, ?) RETURNING id",
            [Path(base).name, base]).fetchone()[0]
        status, reason = ("active", "gate passed: ") if verdict.promote else ("candidate", "gate refused: ")
        model_id = cur.execute(
            """INSERT INTO models (kind, name, path, parent_id, snapshot_id, config, metrics, status, status_reason)
               VALUES ('reward', ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [f"reward-{job_id}", str(Path(cfg.output_dir).resolve()), parent_id, metrics.get("snapshot"),
             cfg.model_dump_json(), json.dumps(metrics), status, reason + verdict.reason]).fetchone()[0]
        if verdict.promote:
            cur.execute("UPDATE models SET status = 'retired', status_reason = ? "
                        "WHERE kind = 'reward' AND status = 'active' AND id <> ?", [f"replaced by #{model_id}", model_id])
        cur.execute("UPDATE jobs SET status = 'succeeded', finished_at = now(), progress = 1, result_model_id = ?, "
                    "error = NULL WHERE id = ?", [model_id, job_id])
