"""What a running job gets: its row, its config, progress reporting, cancellation, engines,
and the one way to run a trainer as a child process.

A job kind's `run(job)` does the work and returns its result (JSON-able); it calls
`job.progress(done, total)` as it goes and stops soon after `job.cancelled()` turns true.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from service.core.procs import log_tail, signal_group, start_group
from service.core.settings import Settings
from service.core.store import Store
from service.loop.engines import EngineSupervisor


class JobCancelled(Exception):
    """The job stopped because it was asked to; what it stored stays."""


@dataclass
class JobRun:
    store: Store
    settings: Settings
    engines: EngineSupervisor
    job_id: int
    config: BaseModel
    options: dict[str, Any]
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0

    @property
    def dir(self) -> Path:
        return self.settings.paths.job_dir(self.job_id)

    @property
    def log_path(self) -> Path:
        return self.dir / "job.log"

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def progress(self, done: int, total: int) -> None:
        # At most two writes a second: a sampling run reports every finished response.
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.5:
            return
        self._last_progress = now
        with self.store.write() as cur:
            cur.execute("UPDATE jobs SET progress = ? WHERE id = ?", [done / max(total, 1), self.job_id])

    def run_trainer(self, module: str, config: BaseModel) -> dict:
        """`python -m MODULE --config <job dir>/config.yaml` in its own process group, its progress
        mirrored into the row; returns the metrics.json it wrote. Cancelling kills it."""
        progress_file = self.dir / "progress.json"
        cfg_file = self.dir / "config.yaml"
        cfg_file.write_text(yaml.safe_dump({**config.model_dump(mode="json"), "progress_file": str(progress_file)}))
        proc = start_group([sys.executable, "-m", module, "--config", str(cfg_file)], self.log_path,
                           {**os.environ, "HF_HUB_OFFLINE": "1"})
        with self.store.write() as cur:  # its process group, so that it can be stopped from anywhere
            cur.execute("UPDATE jobs SET worker_pid = ? WHERE id = ?", [proc.pid, self.job_id])
        try:
            while proc.poll() is None:
                if self.cancelled():
                    raise JobCancelled(f"cancelled while {module} was training; nothing was registered")
                self._mirror(progress_file)
                time.sleep(0.5)
        except BaseException:
            signal_group(proc.pid, 9)  # the trainer must not outlive its job
            proc.wait()
            raise
        self._mirror(progress_file)
        metrics_file = Path(config.output_dir) / "metrics.json"
        if proc.returncode != 0 or not metrics_file.exists():
            why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit code {proc.returncode}" if proc.returncode else "no metrics.json was written")
            raise RuntimeError(f"{why}; nothing was registered. Last lines of {self.log_path}:\n"
                               f"{log_tail(self.log_path, 15)}")
        return json.loads(metrics_file.read_text())

    def _mirror(self, progress_file: Path) -> None:
        try:
            p = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            return  # not written yet, or caught mid-write: the next poll reads it
        self.progress(p["step"], p["total"])
