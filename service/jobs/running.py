"""What a running job gets: its row, its config, progress reporting, cancellation, engines,
and the one way to run a trainer as a child process.

A job kind's `run(job)` does the work and returns its result (JSON-able); it calls
`job.progress(done, total)` as it goes and stops soon after `job.cancelled()` turns true.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from policy.config import EvalConfig
from reward.checkpoint import read_metrics, require_model_dir
from reward.config import TrainingFields
from service.core.enums import JobStatus, ModelKind
from service.core.errors import UserError
from service.core.procs import log_tail
from service.core.settings import LaunchOptions, Settings, VLLMOptions
from service.core.store import Store
from service.data.snapshots import latest_snapshot
from service.engine.data_parallel import local_replicas
from service.engine.remote import RemoteServer, ray_server
from service.engine.server import VLLMServer
from service.engine.supervisor import EngineSupervisor
from service.jobs import launchers


def next_dir(name: str) -> str:
    """The placeholder output directory of a training job; `fresh_output` makes it `<name>-<job id>`."""
    return f"{name}-next"


def check_output_dir(store: Store, out: Path) -> None:
    """A job writes into a fresh directory: never over a registered model or other files."""
    if store.scalar("SELECT count(*) FROM models WHERE path = ?", [str(Path(out).resolve())]):
        raise UserError(
            f"output_dir {out} holds a registered model; a job never overwrites one. Pick another"
        )
    if Path(out).exists() and any(Path(out).iterdir()):
        raise UserError(f"output_dir {out} exists and is not empty; pick a new directory (or leave it unset)")


def training_defaults(
    store: Store, settings: Settings, values: dict[str, Any], name: str, base_kinds: tuple[ModelKind, ...]
) -> dict[str, Any]:
    """A trainer's unset fields from the data directory: the newest snapshot (unless `data` is given),
    the newest checkpoint of `base_kinds`, and a placeholder output directory."""
    values = dict(values)
    if "snapshot" not in values and "data" not in values:
        values["snapshot"] = latest_snapshot(store)
        if values["snapshot"] is None:
            raise UserError(
                "no snapshot to train on: take one with `rankloop snapshot` (or set snapshot: in the config)"
            )
    if "base_model" not in values:
        values["base_model"] = store.scalar(
            "SELECT path FROM models WHERE list_contains(?, kind) ORDER BY id DESC LIMIT 1",
            [list(base_kinds)],
        )
        if values["base_model"] is None:
            raise UserError(
                "no starting checkpoint: set base_model: in the config, or sample from a model first"
            )
    values.setdefault("output_dir", str(settings.paths.model_dir(next_dir(name))))
    return values


def check_job_paths(store: Store, settings: Settings, cfg: BaseModel) -> None:
    """Every file or directory a job reads or writes (each path-typed field of its configuration) lies
    in the data directory, under a root the settings allow (`allowed_roots`), or is a registered
    model's: a request to the admin API must not make the service read or write anywhere on the disk."""
    roots = [settings.data_dir.resolve(), *(Path(r).resolve() for r in settings.allowed_roots)]
    registered = {r[0] for r in store.cursor().execute("SELECT path FROM models").fetchall()}
    for name, value in cfg:
        for path in value if isinstance(value, list) else [value]:
            if not isinstance(path, Path):
                continue
            target = path.resolve()
            if not (any(target.is_relative_to(root) for root in roots) or str(target) in registered):
                raise UserError(
                    f"{name} {path} is outside the data directory {roots[0]} and is not a registered "
                    "model; use a path inside it, or add its parent to the setting allowed_roots "
                    "(RANKLOOP_ALLOWED_ROOTS='[\"/models\"]' or allowed_roots: in config.yaml)"
                )


Training = TypeVar("Training", bound=TrainingFields)


def check_training_config(store: Store, settings: Settings, cfg: TrainingFields, name: str) -> None:
    """What validation cannot see: paths where jobs may go, a fresh output directory, and a real
    starting checkpoint."""
    check_job_paths(store, settings, cfg)
    if Path(cfg.output_dir).name != next_dir(name):
        check_output_dir(store, cfg.output_dir)
    require_model_dir(
        cfg.base_model,
        "base_model",
        "give a directory that save_pretrained wrote, or leave base_model unset for the newest checkpoint",
        UserError,
    )


class JobCancelled(Exception):
    """The job stopped because it was asked to; what it stored stays."""


class JobDetached(Exception):
    """This process stops following the job; its trainer runs on, on the cluster (a service restart)."""


@dataclass
class RunningJob:
    store: Store
    settings: Settings
    engines: EngineSupervisor
    job_id: int
    config: BaseModel
    options: dict[str, Any]
    launch: LaunchOptions = field(default_factory=LaunchOptions)
    launch_ref: str | None = None  # the trainer's handle where it runs (a Ray job's, to follow it again)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    detach_event: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0

    @property
    def dir(self) -> Path:
        return self.settings.paths.job_dir(self.job_id)

    @property
    def log_path(self) -> Path:
        return self.dir / "job.log"

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def fresh_output(self, cfg: Training, name: str) -> Training:
        """The placeholder output directory becomes `<name>-<job id>`: one directory per job."""
        if Path(cfg.output_dir).name != next_dir(name):
            return cfg
        cfg = cfg.model_copy(update={"output_dir": self.settings.paths.model_dir(f"{name}-{self.job_id}")})
        check_output_dir(self.store, cfg.output_dir)
        return cfg

    def finish(self, cur, model_id: int, output_dir: Path, result: dict | None = None) -> None:
        """Mark the job succeeded inside the transaction `cur` that registered its model (with its
        result, so whoever sees it succeeded sees what it found)."""
        cur.execute(
            "UPDATE jobs SET status = ?, finished_at = now(), progress = 1, result_model_id = ?, "
            "output_dir = ?, error = NULL, result = coalesce(?, result) WHERE id = ?",
            [
                JobStatus.SUCCEEDED,
                model_id,
                str(output_dir),
                json.dumps(result) if result is not None else None,
                self.job_id,
            ],
        )

    def progress(self, done: int, total: int) -> None:
        # At most two writes a second: a sampling run reports every finished response.
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        with self.store.write() as cur:
            cur.execute("UPDATE jobs SET progress = ? WHERE id = ?", [done / max(total, 1), self.job_id])

    @property
    def exchange_dir(self) -> Path:
        """Where the trainer's config and progress files go: the job's directory, or under the storage
        root that a Ray cluster's workers see."""
        root = self.launch.storage_root if self.launch.launcher == "ray" else None
        return root / "rankloop-jobs" / str(self.job_id) if root else self.dir

    @contextmanager
    def vllm_servers(
        self, model_dir: Path, vllm: VLLMOptions | None
    ) -> Iterator[list[VLLMServer] | list[RemoteServer]]:
        """A model's vLLM servers for this job: the service's own (kept for later jobs); data-parallel
        replicas here, one per `num_processes` devices (`accelerate`); or one started on the Ray cluster
        the job was sent to. All but the service's own stop when the block ends."""
        opts = vllm or self.settings.vllm
        if self.launch.launcher == "ray":
            with ray_server(model_dir, opts, self.launch, self.exchange_dir, self.log_path, self.job_id) as s:
                yield [s]
        elif self.launch.launcher == "accelerate":
            self.engines.stop_idle()  # the devices the replicas need
            with local_replicas(model_dir, opts, self.launch, self.settings.paths.logs) as servers:
                yield servers
        else:
            with self.engines.use(model_dir, vllm) as s:
                yield [s]

    def run_trainer(self, module: str, config: TrainingFields | EvalConfig) -> dict[str, Any]:
        """`python -m MODULE --config FILE` where the job's launcher says (service/jobs/launchers.py),
        its progress mirrored into the row and its output into the job's log; returns the metrics.json
        it wrote. Cancelling stops it wherever it runs. A job that already has a trainer on a Ray
        cluster (the service restarted) follows that one instead of starting another."""
        exchange = self.exchange_dir
        exchange.mkdir(parents=True, exist_ok=True)
        progress_file = exchange / "progress.json"
        cfg_file = exchange / "config.yaml"
        if self.launch_ref:
            handle = launchers.attach(self.launch_ref, self.log_path)
        else:
            cfg_file.write_text(
                yaml.safe_dump({**config.model_dump(mode="json"), "progress_file": str(progress_file)})
            )
            handle = launchers.start(
                self.launch,
                module,
                cfg_file,
                self.log_path,
                {**os.environ, "HF_HUB_OFFLINE": "1"},
                self.job_id,
            )
            self.launch_ref = handle.ref
            with self.store.write() as cur:  # so that it can be stopped, or followed again, from anywhere
                cur.execute(
                    "UPDATE jobs SET worker_pid = ?, launch_ref = ? WHERE id = ?",
                    [getattr(handle, "pid", None), handle.ref, self.job_id],
                )
        try:
            while (code := handle.poll()) is None:
                if self.cancelled():
                    raise JobCancelled(f"cancelled while {module} was training; nothing was registered")
                if self.detach_event.is_set():
                    raise JobDetached(self.launch_ref)
                self._mirror(progress_file)
                handle.sync_log()
                time.sleep(0.5)
        except JobDetached:
            raise
        except BaseException:
            handle.stop()
            raise
        handle.sync_log()
        self._mirror(progress_file)
        metrics = read_metrics(config.output_dir) if code == 0 else None
        if metrics is None:
            if code == 0:
                raise RuntimeError(
                    f"no metrics.json was written; nothing was registered. Last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path, 15)}"
                )
            raise RuntimeError(launchers.failure(handle, self.log_path))
        return metrics

    def _mirror(self, progress_file: Path) -> None:
        try:
            p = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            return  # not written yet, or caught mid-write: the next poll reads it
        self.progress(p["step"], p["total"])
