"""The DuckDB store: the one process-wide connection to `rankloop.duckdb` and its schema.

DuckDB lets one process open a database file for writing, and while it holds the
file no other process can open it at all. The service (or a CLI command when no
service runs) opens it through `Store`; everything else gets Parquet snapshots.
Inside the process: one connection, a `cursor()` per thread, one explicit
transaction per logical write, writes serialised by a lock (two DuckDB transactions
updating the same row would otherwise fail with a conflict), bulk inserts via Arrow.

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

from service.core.errors import DataDirBusy, UserError
from service.core.paths import private_dir, private_file
from service.core.schema import LATEST, MIGRATIONS, SCHEMA_VERSION_TABLE


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
        """Open (creating if needed) the database and bring its schema up to date."""
        path = Path(path)
        private_dir(path.parent)
        existed = path.exists()
        try:
            con = duckdb.connect(str(path))
        except duckdb.Error as e:
            if not isinstance(e, duckdb.IOException) or "lock" not in str(e).lower():
                raise UserError(
                    f"cannot open the database {path}: it is damaged or not a DuckDB file "
                    f"({str(e).splitlines()[0]}); restore it from a backup or use another --data "
                    "directory"
                ) from None
            if "lock" in str(e).lower():
                pid = re.search(r"PID (\d+)", str(e))
                raise DataDirBusy(
                    f"the database {path} is held by another process"
                    f"{f' (PID {pid.group(1)})' if pid else ''}: a `rankloop serve` may be running on "
                    f"{path.parent}. Send the command to that service (rankloop finds it through "
                    f"{path.parent / 'service.json'}), stop it, or use another --data directory."
                ) from None
            raise UserError(f"cannot open the database {path}: {e}") from None
        if existed:
            private_file(path)  # it holds password hashes: a looser one is fixed, with a warning
        else:
            path.chmod(0o600)
        store = cls(con, path)
        if migrate:
            try:
                store.migrate(target_version)
            except duckdb.Error as e:
                con.close()
                raise UserError(
                    f"cannot read the database {path}: it is damaged ({str(e).splitlines()[0]}); "
                    "restore it from a backup or use another --data directory"
                ) from None
        return store

    def check_readable(self) -> None:
        """Read every table's size and newest row: a damaged file fails here, not on some later request."""
        try:
            for (table,) in self._con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                self._con.execute(f'SELECT count(*) FROM "{table}"').fetchall()
                self._con.execute(f'SELECT * FROM "{table}" ORDER BY 1 DESC LIMIT 1').fetchall()
        except duckdb.Error as e:
            raise UserError(
                f"cannot read the database {self.path}: it is damaged ({str(e).splitlines()[0]}); "
                "restore it from a backup or use another --data directory"
            ) from None

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
        """One logical write: BEGIN ... COMMIT, or ROLLBACK on any error; serialised."""
        with self.write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            self.generation += 1

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts."""
        cur = self.cursor().execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
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
        cur.complete()  # DuckDB 2.0 refuses register() while an earlier result is unread
        cur.register("_rankloop_rows", data)
        try:
            rows = cur.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _rankloop_rows"
                f"{' ON CONFLICT DO NOTHING' if skip_existing else ''} RETURNING id"
            ).fetchall()
        finally:
            cur.unregister("_rankloop_rows")
        return [r[0] for r in rows]

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        cur = self.cursor()
        cur.execute(SCHEMA_VERSION_TABLE)
        return cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]

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
