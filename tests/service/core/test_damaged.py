"""A damaged database reaches the user as the one user error (StorageError, a UserError), naming the
file, what is wrong and what to do, and nothing writes to it: tried on real files cut short and
overwritten, through the `rankloop` command as a user runs it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from service.core.errors import StorageError, UserError, describe, exit_code
from service.core.store import Store
from tests.support import REPO

KEEP = 300 * 1024  # what is left of the file: its header and first blocks, not its data


def big_store(data: Path) -> Path:
    """A database of several MB whose tasks and rankings lie past the first 300 KiB."""
    db = data / "rankloop.duckdb"
    with Store.open(db) as store, store.write() as cur:
        cur.execute(
            "INSERT INTO prompts (text, source, messages) SELECT md5(i::VARCHAR) || repeat(md5((i * 7)::VARCHAR), 4), "
            "'seed', '[]' FROM range(8000) t(i)"
        )
        cur.execute(
            "INSERT INTO tasks (prompt_id, sample_ids) SELECT i + 1, [2 * i + 1, 2 * i + 2] FROM range(8000) t(i)"
        )
        cur.execute("INSERT INTO annotators (name, role) VALUES ('sim', 'simulated')")
        cur.execute(
            "INSERT INTO rankings (task_id, annotator_id, ranks, submission_id) "
            "SELECT i + 1, 1, [1 + i % 2, 2 - i % 2], md5(i::VARCHAR) FROM range(8000) t(i)"
        )
    assert db.stat().st_size > 2_000_000
    return db


def state(data: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data.iterdir())}


def test_a_database_cut_short_mid_file_is_refused_by_status(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = big_store(data)
    with db.open("r+b") as f:
        f.truncate(KEEP)
    # The header is intact (DuckDB opens the file) and reading the data fails: the case a user met.
    with (
        duckdb.connect(str(db), read_only=True) as raw,
        pytest.raises(duckdb.IOException, match="read enough"),
    ):
        raw.execute("SELECT sum(len(ranks)) FROM rankings").fetchall()
    before = state(data)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "rankloop"), "--data", str(data), "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("rankloop status: error: the database ") and str(db) in error
    assert "is damaged" in error and "cut short" in error and "restore BACKUP" in error
    assert "snapshots" in error  # the other copy of the rankings
    assert state(data) == before and db.stat().st_size == KEEP  # nothing written, nothing added beside it


def test_opening_a_cut_short_database_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = big_store(data)
    with db.open("r+b") as f:
        f.truncate(2 * 1024 * 1024)
    before = state(data)
    for _ in range(2):  # and again: the first refusal wrote nothing a second open would trip over
        with pytest.raises(StorageError, match="was cut short") as e:
            Store.open(db)
        assert isinstance(e.value, UserError) and str(db) in str(e.value)
    assert state(data) == before


def test_overwritten_blocks_are_reported_wherever_they_are_read(tmp_path: Path) -> None:
    """Garbage where the blocks were (the file keeps its length): opening it or reading any table
    raises StorageError, never DuckDB's own error."""
    data = tmp_path / "data"
    db = big_store(data)
    raw = bytearray(db.read_bytes())
    block = 256 * 1024
    for start in range(3 * 4096 + block, len(raw), block):  # every block but the first
        raw[start : start + 4096] = bytes(b ^ 0xFF for b in raw[start : start + 4096])
    db.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="is damaged"):
        with Store.open(db) as store:
            store.check_readable()
            for table in ("prompts", "tasks", "rankings"):
                store.query(f"SELECT * FROM {table}")


def test_a_storage_error_inside_a_write_rolls_back_and_becomes_a_user_error(store: Store) -> None:
    with pytest.raises(StorageError, match="is damaged") as e, store.write() as cur:
        cur.execute("INSERT INTO prompts (text, source) VALUES ('half', 'seed')")
        raise duckdb.IOException(
            'IO Error: Could not read enough bytes from file "x": attempted to read 8 bytes'
        )
    assert str(store.path) in str(e.value) and "Could not read enough bytes" in str(e.value)
    assert store.scalar("SELECT count(*) FROM prompts") == 0
    with pytest.raises(StorageError, match="the disk is full"), store.write():
        raise duckdb.IOException("IO Error: Could not write file: No space left on device")
    with pytest.raises(duckdb.ConstraintException), store.write() as cur:  # other errors stay as they are
        cur.execute("INSERT INTO prompts (text, source) VALUES ('x', 'nowhere')")


def test_a_storage_error_that_escapes_the_store_is_still_a_user_error() -> None:
    stray = duckdb.Error("Corrupt database file: computed checksum 1 does not match stored checksum 2")
    assert exit_code(stray) == 2 and "is damaged" in describe(stray)
    assert (
        exit_code(duckdb.IOException('IO Error: Could not set lock on file "x"')) is None
    )  # busy, not damaged
