"""A process on a Ray cluster, submitted and followed through Ray's Jobs API: a trainer
(service/jobs/launchers.py) or a vLLM server that samples for a job (service/engine/remote.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

from service.core.errors import UserError
from service.core.settings import LaunchOptions

STOPPED = -15  # the exit status a stopped job reports, as a process killed by SIGTERM would


class RayHandle:
    """A trainer submitted to a Ray cluster as a job; followed through the cluster's Jobs API."""

    def __init__(self, address: str, submission_id: str, log_path: Path, logged: int = 0):
        """`logged`: characters of the job's output already copied into `log_path` (when following again)."""
        from ray.job_submission import JobSubmissionClient

        self.address, self.submission_id, self.log_path = address, submission_id, log_path
        self.ref = f"ray:{address}#{submission_id}"
        try:
            self.client = JobSubmissionClient(address)
        except Exception as e:  # noqa: BLE001 - Ray raises several kinds; all mean the same to the user
            raise UserError(
                f"cannot reach the Ray cluster at {address}: {e}; start one (`ray start --head`) or give "
                "another --ray-address"
            ) from None
        self._logged = logged

    def submit(
        self, argv: list[str], env: dict[str, str], opts: LaunchOptions, what: str = "trainer"
    ) -> None:
        self.client.submit_job(
            entrypoint=shlex.join(argv),
            submission_id=self.submission_id,
            runtime_env={"env_vars": env},
            entrypoint_num_cpus=opts.cpus,
            entrypoint_num_gpus=opts.gpus,
            entrypoint_memory=int(opts.memory_gib * 2**30) if opts.memory_gib else None,
            metadata={"rankloop": what},
        )

    def poll(self) -> int | None:
        from ray.job_submission import JobStatus

        status = self.client.get_job_status(self.submission_id)
        if status == JobStatus.SUCCEEDED:
            return 0
        if status == JobStatus.FAILED:
            return 1
        if status == JobStatus.STOPPED:
            return STOPPED
        return None

    def stop(self) -> None:
        try:
            self.client.stop_job(self.submission_id)
        except Exception:  # noqa: BLE001 - already gone: nothing left to stop
            pass

    def sync_log(self) -> None:
        """The trainer's output so far, appended to the job's log (what is new since the last call)."""
        try:
            text = self.client.get_job_logs(self.submission_id)
        except Exception:  # noqa: BLE001 - the cluster is busy or gone: the next poll says which
            return
        if len(text) > self._logged:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(text[self._logged :])
            self._logged = len(text)

    def reason(self) -> str:
        info = self.client.get_job_info(self.submission_id)
        return f"the Ray job {self.submission_id} {str(info.status).lower()}: {info.message or 'no reason given'}"
