"""Every path under the data directory, built in this one place.

    paths = DataPaths(settings.data_dir)
    paths.db, paths.job_dir(7), paths.snapshot_dir(snap_id), paths.service_file

Layout: rankloop.duckdb (the database, held by one process), service.json (address of a
running `rankloop serve`), admin.key and secret.key (mode 0600), logs/ (vLLM servers),
jobs/<id>/ (config, log, progress), models/<name>/ (checkpoints), snapshots/<id>/,
uploads/ and downloads/ (files that move over the admin API).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DB_FILE = "rankloop.duckdb"


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_FILE

    @property
    def service_file(self) -> Path:
        return self.root / "service.json"

    @property
    def admin_key(self) -> Path:
        return self.root / "admin.key"

    @property
    def secret_key(self) -> Path:
        return self.root / "secret.key"

    @property
    def logs(self) -> Path:
        """Logs of the vLLM servers rankloop starts."""
        return self.root / "logs"

    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id)

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.root / "snapshots" / snapshot_id

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"


def write_private(path: Path, content: bytes) -> None:
    """Create a file readable by its owner only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file written whole or not at all: a temporary file beside it, renamed over it at the end.
    A failure (a full disk, a directory in the way) leaves any previous file as it was."""
    if path.is_dir():
        raise FileExistsError(f"{path} is a directory; give a file path")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, content: bytes) -> None:
    with atomic_file(path) as f:
        f.write(content)
