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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.core.errors import UserError

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
    def report(self) -> Path:
        """The loop's report (`rankloop report`), one self-contained HTML file."""
        return self.root / "report.html"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"


def _warn(message: str) -> None:
    print(f"rankloop: {message}", file=sys.stderr)


def private_dir(path: Path) -> None:
    """The data directory: created 0700; an existing one open to others is closed, with a warning."""
    if path.exists() and not path.is_dir():
        raise UserError(f"the data directory {path} is a file; --data must name a directory (or a new path)")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            path.chmod(mode & 0o700)
        except OSError as e:
            raise UserError(
                f"the data directory {path} is open to other users (mode {mode:o}) and cannot be "
                f"restricted ({e.strerror}); run `chmod 700 {path}`"
            ) from None
        _warn(f"the data directory {path} was open to other users (mode {mode:o}); it is now 700")


def private_file(path: Path) -> None:
    """A file holding secrets (the database, keys): 0600; a looser one is restricted, with a warning."""
    if not path.exists():
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(mode & 0o600)
        _warn(f"{path} was readable by other users (mode {mode:o}); it is now 600")


def read_secret(path: Path, what: str, min_length: int = 32) -> str:
    """A key file that must be the owner's alone and long enough: refused, with the fix, when not."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UserError(
            f"{what} {path} is readable by other users (mode {mode:o}), so it may be known: run "
            f"`chmod 600 {path}` if it is safe, or delete it to have a new one made"
        )
    value = path.read_text().strip()
    if len(value) < min_length:
        raise UserError(
            f"{what} in {path} has {len(value)} characters; at least {min_length} random ones are "
            "needed: delete the file to have one generated"
        )
    return value


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
    if path.exists() and not path.is_file():  # a device or a pipe must not be replaced by a file
        raise FileExistsError(f"{path} is not a regular file; give a file path")
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
