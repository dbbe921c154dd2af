"""Jobs: long work (sampling, training, evaluation) that runs while everything else goes on.

One table of job kinds: kind -> its config model, how the config is completed from the
data directory and validated (before any row exists), its options (such as the gate's
bar), and the function that runs it (in-process for work that writes the database,
through `RunningJob.run_trainer` for a trainer in its own process). Adding a kind is adding
a row. The `JobRunner` of a process (the service's, or a command's own when no service
runs) starts each job on a thread, records progress, status and result in the `jobs`
table, and cancels on request; what a cancelled job stored stays.

Statuses: queued -> running -> succeeded | failed | cancelled. A job whose process is
gone (the machine rebooted, the service was killed) is marked failed the next time jobs
are looked at.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reward.config import RewardTrainConfig
from reward.configfile import validate
from service.core.enums import FINISHED, JobStatus
from service.core.errors import NotFound, UserError
from service.core.metrics import JOB_DURATION
from service.core.procs import pid_alive, signal_group
from service.core.settings import LaunchOptions, Settings
from service.core.store import Store
from service.core.tracing import TRACER
from service.engine.supervisor import EngineSupervisor
from service.jobs import evaluate_job, policy_job, reward_job, sample_job
from service.jobs.launch_check import check_launch
from service.jobs.running import JobCancelled, JobDetached, RunningJob


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RewardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_accuracy: float = Field(
        0.55, ge=0, le=1, description="held-out accuracy the first reward model needs"
    )


@dataclass(frozen=True)
class JobKind:
    config: type[BaseModel]
    prepare: Callable[[Store, Settings, dict[str, Any], str], BaseModel]
    run: Callable[[RunningJob], dict]
    options: type[BaseModel] = NoOptions


KINDS: dict[str, JobKind] = {
    "sample": JobKind(
        sample_job.SampleJobConfig,
        lambda store, settings, values, source: sample_job.prepare(
            store, settings, validate(sample_job.SampleJobConfig, values, source)
        ),
        sample_job.run,
    ),
    "reward": JobKind(RewardTrainConfig, reward_job.prepare, reward_job.run, RewardOptions),
    **{
        method: JobKind(config, partial(policy_job.prepare, method), partial(policy_job.run, method))
        for method, config in policy_job.CONFIGS.items()
    },
    "evaluate": JobKind(evaluate_job.EvalJobConfig, evaluate_job.prepare, evaluate_job.run),
}


def _row(r: dict) -> dict:
    for key in ("config", "options", "result", "launch"):
        if isinstance(r.get(key), str):
            r[key] = json.loads(r[key])
    return r


def list_jobs(store: Store) -> list[dict]:
    reap_stale(store)
    return store.query(
        "SELECT id, kind, status, progress, result_model_id, error, created_at FROM jobs ORDER BY id"
    )


def get_job(store: Store, job_id: int) -> dict:
    reap_stale(store)
    rows = store.query("SELECT * FROM jobs WHERE id = ?", [job_id])
    if not rows:
        raise NotFound(f"there is no job {job_id}; `rankloop jobs list` shows them")
    return _row(rows[0])


def _finish(
    store: Store, job_id: int, status: JobStatus, error: str | None = None, result: dict | None = None
) -> None:
    with store.write() as cur:
        cur.execute(
            "UPDATE jobs SET status = ?, error = ?, result = coalesce(?, result), "
            "progress = CASE WHEN ? THEN 1 ELSE progress END, "
            "finished_at = coalesce(finished_at, now()) WHERE id = ?",
            [
                status,
                error,
                json.dumps(result) if result is not None else None,
                status == JobStatus.SUCCEEDED,
                job_id,
            ],
        )


def reap_stale(store: Store) -> None:
    """Mark jobs whose owning process is gone as failed, and stop a trainer they left behind. A job
    whose trainer runs on a Ray cluster is left running: the next service follows it again
    (`JobRunner.resume`)."""
    unfinished = [JobStatus.QUEUED, JobStatus.RUNNING]
    for job in store.query(
        "SELECT id, pid, worker_pid, launch_ref FROM jobs WHERE list_contains(?, status)", [unfinished]
    ):
        if (job["launch_ref"] or "").startswith("ray:"):
            continue
        if not pid_alive(job["pid"]):
            if job["worker_pid"]:
                signal_group(job["worker_pid"], 9)
            _finish(
                store,
                job["id"],
                JobStatus.FAILED,
                "interrupted: the process running this job is gone; "
                "nothing was registered (stored samples stay)",
            )


class JobRunner:
    """Runs this process's jobs on threads; one per process (`app.state.jobs` in the service)."""

    def __init__(self, store: Store, settings: Settings, engines: EngineSupervisor):
        self.store, self.settings, self.engines = store, settings, engines
        self._lock = threading.Lock()
        self._runs: dict[int, tuple[RunningJob, threading.Thread]] = {}

    def submit(
        self,
        kind: str,
        values: dict[str, Any],
        options: dict[str, Any] | None = None,
        source: str = "the request",
        launch: dict[str, Any] | None = None,
    ) -> int:
        """Validate, record the job (one transaction) and start it; errors leave nothing behind.
        `launch` overrides the `jobs` settings (where the trainer runs) for this job."""
        spec = KINDS.get(kind)
        if spec is None:
            raise UserError(f"unknown job kind {kind!r}; valid: {', '.join(KINDS)}")
        cfg = spec.prepare(self.store, self.settings, values, source)
        opts = validate(spec.options, options or {}, f"{source} (options)")
        where = check_launch(
            kind,
            cfg,
            validate(
                LaunchOptions, {**self.settings.jobs.model_dump(), **(launch or {})}, f"{source} (launch)"
            ),
            self.settings,
        )
        with self.store.write() as cur:
            row = cur.execute(
                "INSERT INTO jobs (kind, config, options, pid, launch) VALUES (?, ?, ?, ?, ?) RETURNING id",
                [kind, cfg.model_dump_json(), opts.model_dump_json(), os.getpid(), where.model_dump_json()],
            ).fetchone()
            assert row is not None  # RETURNING gives the row just inserted
            job_id: int = row[0]
            run = RunningJob(self.store, self.settings, self.engines, job_id, cfg, opts.model_dump(), where)
            cur.execute("UPDATE jobs SET log_path = ? WHERE id = ?", [str(run.log_path), job_id])
        thread = threading.Thread(target=self._run, args=(kind, spec, run), daemon=True, name=f"job-{job_id}")
        with self._lock:
            self._runs[job_id] = (run, thread)
        thread.start()
        return job_id

    def _run(self, kind: str, spec: JobKind, run: RunningJob) -> None:
        start, state = time.perf_counter(), JobStatus.FAILED
        try:
            run.dir.mkdir(parents=True, exist_ok=True)
            with self.store.write() as cur:
                cur.execute(
                    "UPDATE jobs SET status = ?, started_at = now() WHERE id = ?",
                    [JobStatus.RUNNING, run.job_id],
                )
            with TRACER.start_as_current_span(
                f"job {kind}", attributes={"rankloop.job.id": run.job_id, "rankloop.job.kind": kind}
            ):
                result = spec.run(run)
            _finish(self.store, run.job_id, JobStatus.SUCCEEDED, None, result)
            state = JobStatus.SUCCEEDED
        except JobCancelled as e:
            _finish(self.store, run.job_id, JobStatus.CANCELLED, str(e))
            state = JobStatus.CANCELLED
        except JobDetached:  # this process stops; the trainer goes on on the cluster, followed again later
            state = JobStatus.RUNNING
        except Exception as e:  # the job's own failure: recorded, never raised into the service
            _finish(
                self.store,
                run.job_id,
                JobStatus.FAILED,
                f"{e}" if isinstance(e, UserError | RuntimeError) else f"{type(e).__name__}: {e}",
            )
        finally:
            JOB_DURATION.labels(kind, state).observe(time.perf_counter() - start)
            with self._lock:
                self._runs.pop(run.job_id, None)

    def wait(self, job_id: int, timeout_s: float | None = None) -> dict:
        with self._lock:
            entry = self._runs.get(job_id)
        if entry:
            entry[1].join(timeout_s)
        return get_job(self.store, job_id)

    def cancel(self, job_id: int, timeout_s: float = 60.0) -> dict:
        """Ask a job to stop and wait for it; what it stored stays."""
        job = get_job(self.store, job_id)
        if job["status"] in FINISHED:
            raise UserError(
                f"job {job_id} already {job['status']}; only a queued or running job can be cancelled"
            )
        with self._lock:
            entry = self._runs.get(job_id)
        if entry is None:  # no process runs it any more (only one process holds the database)
            if job["worker_pid"]:
                signal_group(job["worker_pid"], 9)
            _finish(self.store, job_id, JobStatus.CANCELLED, "cancelled; nothing was registered")
            return get_job(self.store, job_id)
        entry[0].cancel_event.set()
        return self.wait(job_id, timeout_s)

    def resume(self) -> list[int]:
        """Follow again the jobs whose trainers run on a Ray cluster and whose process is gone (a
        service restarted): each job runs its kind's function again, which attaches to the trainer it
        started instead of starting another, and registers the result as if nothing had happened."""
        resumed = []
        for job in self.store.query(
            "SELECT id, kind, config, options, launch, launch_ref, pid FROM jobs "
            "WHERE status = ? AND launch_ref LIKE 'ray:%'",
            [JobStatus.RUNNING],
        ):
            if pid_alive(job["pid"]) or job["kind"] not in KINDS:
                continue
            spec = KINDS[job["kind"]]
            run = RunningJob(
                self.store,
                self.settings,
                self.engines,
                job["id"],
                spec.config.model_validate_json(job["config"]),
                json.loads(job["options"] or "{}"),
                LaunchOptions.model_validate_json(job["launch"]),
                job["launch_ref"],
            )
            with self.store.write() as cur:
                cur.execute("UPDATE jobs SET pid = ? WHERE id = ?", [os.getpid(), run.job_id])
            thread = threading.Thread(
                target=self._run, args=(job["kind"], spec, run), daemon=True, name=f"job-{run.job_id}"
            )
            with self._lock:
                self._runs[run.job_id] = (run, thread)
            thread.start()
            resumed.append(run.job_id)
        return resumed

    def stop_all(self) -> None:
        """Cancel every job of this process and wait for their threads (the process is stopping). A
        trainer on a Ray cluster is left running there: the next service follows it again."""
        with self._lock:
            entries = list(self._runs.values())
        for run, _ in entries:
            if (run.launch_ref or "").startswith("ray:"):
                run.detach_event.set()
            else:
                run.cancel_event.set()
        for _, thread in entries:
            thread.join(60)  # a job may still be writing its last row after its status says it ended
        reap_stale(self.store)
