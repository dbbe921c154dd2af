"""The DuckDB store: the one process-wide connection to `rankloop.duckdb` and its schema.

DuckDB lets one process open a database file for writing, and while it holds the
file no other process can open it at all. The service (or a CLI command when no
service runs) opens it through `Store`; everything else gets Parquet snapshots.
Inside the process: one connection, a `cursor()` per thread, one explicit
transaction per logical write, writes serialised by a lock (two DuckDB transactions
updating the same row would otherwise fail with a conflict), bulk inserts via Arrow.
A damaged file (cut short, overwritten) is refused on open when its length shows it, and any
read or write that hits damage raises StorageError, the user error that says what to do.

    with Store.open(settings.paths.db) as store:
        with store.write() as cur:
            cur.execute("INSERT INTO prompts (text, source) VALUES (?, 'seed')", ["hi"])
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from service.core.errors import DataDirBusy, StorageError, UserError, is_storage_error, storage_problem
from service.core.paths import private_dir, private_file
from service.core.schema import LATEST, MIGRATIONS, SCHEMA_VERSION_TABLE

HEADER_BYTES = 3 * 4096  # a DuckDB file's main header and its two database headers, before the blocks


class Store:
    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path):
        self.path = path
        self._con = con
        self._local = threading.local()  # one cursor per thread, as DuckDB asks
        self.caches: dict[
            str, Any
        ] = {}  # in-process state kept beside this database (the queue's book, accounts)
        # Held for each write; in-process caches (the queue's book) hold it to read a consistent state.
        self.write_lock = threading.RLock()
        self.generation = (
            0  # committed write transactions since open: caches compare it to know they are stale
        )

    @classmethod
    def open(cls, path: str | Path, migrate: bool = True, target_version: int | None = None) -> Store:
        """Open (creating if needed) the database and bring its schema up to date. A damaged file is
        refused (StorageError) before anything is written to it."""
        path = Path(path)
        private_dir(path.parent)
        existed = path.exists()
        try:
            con = duckdb.connect(str(path))
        except duckdb.Error as e:
            if "lock" in str(e).lower():
                pid = re.search(r"PID (\d+)", str(e))
                raise DataDirBusy(
                    f"the database {path} is held by another process"
                    f"{f' (PID {pid.group(1)})' if pid else ''}: a `rankloop serve` may be running on "
                    f"{path.parent}. Send the command to that service (rankloop finds it through "
                    f"{path.parent / 'service.json'}), stop it, or use another --data directory."
                ) from None
            raise StorageError(
                f"cannot open the database {path}: it is damaged or not a DuckDB file "
                f"({str(e).splitlines()[0]}); rankloop changed nothing. Restore a backup into a new data "
                "directory (`rankloop --data NEW restore BACKUP`) or use another --data directory"
            ) from None
        if existed:
            private_file(path)  # it holds password hashes: a looser one is fixed, with a warning
        else:
            path.chmod(0o600)
        store = cls(con, path)
        try:
            if existed:
                store.check_length()
            if migrate:
                store.migrate(target_version)
        except BaseException as e:
            con.close()
            if isinstance(e, duckdb.Error):  # migrations on a file that reads wrong
                raise storage_problem(path, e) from None
            raise
        return store

    def check_length(self) -> None:
        """Refuse a file shorter than the blocks its header says are in use: it was cut short (a copy
        interrupted, a full disk), and reading or writing past its end would fail or make it worse."""
        with self.storage_errors():
            row = self._con.execute(
                "SELECT block_size, used_blocks FROM pragma_database_size() "
                "WHERE database_name = current_database()"
            ).fetchone()
        if row is None:
            return
        block_size, used = row
        have, need = self.path.stat().st_size, HEADER_BYTES + used * block_size
        if have < need:
            raise storage_problem(
                self.path,
                what=f"the file has {have:,} bytes but the data it holds needs at least {need:,}, so it "
                "was cut short (an interrupted copy, a full disk)",
            )

    def check_readable(self) -> None:
        """Read every table's size and newest row: a damaged file fails here, not on some later request."""
        with self.storage_errors():
            for (table,) in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                self._con.execute(f'SELECT count(*) FROM "{table}"').fetchall()
                self._con.execute(f'SELECT * FROM "{table}" ORDER BY 1 DESC LIMIT 1').fetchall()

    @contextmanager
    def storage_errors(self) -> Iterator[None]:
        """Turn DuckDB's errors about the file itself (damaged, cut short, disk full) into the
        StorageError a user sees: it names the file, what is wrong and what to do."""
        try:
            yield
        except duckdb.Error as e:
            if not is_storage_error(e):
                raise
            raise storage_problem(self.path, e) from None

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections -------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (created on first use)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One logical write: BEGIN ... COMMIT, or ROLLBACK on any error; serialised. A storage
        error anywhere in it becomes a StorageError (after the rollback)."""
        with self.write_lock:
            cur = self.cursor()
            with self.storage_errors():
                cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException as e:
                damaged = is_storage_error(e)
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    if not damaged:  # a rollback that fails is the news: the connection is broken
                        raise
                if damaged:
                    raise storage_problem(self.path, e) from None
                raise
            with self.storage_errors():
                cur.execute("COMMIT")
            self.generation += 1

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts."""
        with self.storage_errors():
            cur = self.cursor().execute(sql, params or [])
            names = [d[0] for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self.storage_errors():
            row = self.cursor().execute(sql, params or []).fetchone()
        return row[0] if row else None

    def insert_arrow(
        self, cur: duckdb.DuckDBPyConnection, table: str, data: pa.Table, skip_existing: bool = False
    ) -> list[int]:
        """Bulk insert through DuckDB's Arrow scan; returns the new ids in row order. `skip_existing`:
        rows that clash with a unique key already stored are left out (ON CONFLICT DO NOTHING)."""
        if data.num_rows == 0:
            return []
        cols = ", ".join(data.column_names)
        with registered(cur, "_rankloop_rows", data):
            rows = cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _rankloop_rows"
                f"{' ON CONFLICT DO NOTHING' if skip_existing else ''} RETURNING id"
            ).fetchall()
        return [r[0] for r in rows]

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        with self.storage_errors():
            cur = self.cursor()
            cur.execute(SCHEMA_VERSION_TABLE)
            row = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return row[0] if row else 0

    def migrate(self, target_version: int | None = None) -> list[int]:
        """Run the migrations this database has not run yet (up to target), each in its own transaction."""
        target = LATEST if target_version is None else target_version
        current = self.schema_version()
        if current > LATEST:
            raise UserError(
                f"{self.path} has schema version {current}, newer than this rankloop knows ({LATEST}); "
                "upgrade rankloop"
            )
        applied = []
        for m in MIGRATIONS:
            if current < m.version <= target:
                with self.write() as cur:
                    cur.execute(m.sql)
                    cur.execute(
                        "INSERT INTO schema_version (version, name) VALUES (?, ?)", [m.version, m.name]
                    )
                applied.append(m.version)
        return applied

    # -- overview ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Row counts of every table, plus open tasks (those still needing rankings)."""
        tables = [
            "system_prompts",
            "prompts",
            "models",
            "samples",
            "tasks",
            "annotators",
            "rankings",
            "snapshots",
            "jobs",
        ]
        out = {t: self.scalar(f"SELECT count(*) FROM {t}") for t in tables}
        out["open_tasks"] = self.scalar(
            """SELECT count(*) FROM tasks t WHERE t.required_rankings >
                 (SELECT count(*) FROM rankings r WHERE r.task_id = t.id AND NOT r.skipped)"""
        )
        return out


@contextmanager
def registered(cur: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> Iterator[None]:
    """`data` as the view `name` on `cur` for the block's statements. When a statement failed, the
    transaction may refuse the unregister too: the statement's error is the one that propagates."""
    cur.complete()  # DuckDB 2.0 refuses register() while an earlier result is unread
    cur.register(name, data)
    failed = True
    try:
        yield
        failed = False
    finally:
        try:
            cur.unregister(name)
        except duckdb.Error:
            if not failed:
                raise
