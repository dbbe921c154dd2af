"""Backups of a data directory, taken while the service runs, and their restore.

A backup is a directory: `rankloop.duckdb` (the whole database, copied in one read transaction
with DuckDB's `COPY FROM DATABASE`, so it is one consistent state while annotators keep ranking and
the gateway keeps logging), the snapshots that state names, the signing secret, optionally the
model checkpoints that live in the data directory, and `manifest.json` with every file's size and
SHA-256. It is written to `NAME.partial` and renamed when complete and synced, so a backup that
exists is whole.

A restore checks every file against the manifest before it copies anything, goes only into an
empty data directory, and points the restored snapshots (and copied models) at their new place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from service.core.errors import UserError
from service.core.paths import DB_FILE, DataPaths
from service.core.store import Store

MANIFEST = "manifest.json"
SCHEDULED = "scheduled-"  # what the schedule names its backups (and prunes)
FORMAT = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # read-only is enough to sync, and works on read-only files
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (a backup that is reported made survives a crash)."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(folder)


def _inside(path: str, root: Path) -> Path | None:
    """`path` relative to `root`, or None when it lies elsewhere."""
    try:
        return Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return None


def _one(row: tuple | None):
    assert row is not None  # an aggregate or current_database() always gives a row
    return row[0]


def backup_name() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def make_backup(store: Store, paths: DataPaths, dest: Path, models: bool = False) -> dict:
    """Copy the data directory's state into `dest` (which must not exist yet); returns its manifest."""
    dest = dest.resolve()
    if dest.exists():
        raise UserError(f"{dest} already exists; a backup goes into a new directory")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a backup that was interrupted
    partial.mkdir(parents=True, mode=0o700)
    try:
        cur = store.cursor()
        db_name = _one(cur.execute("SELECT current_database()").fetchone())
        quoted = str(partial / DB_FILE).replace("'", "''")
        attached = (
            f"rankloop_backup_{uuid.uuid4().hex}"  # one per backup: a scheduled and a manual one may overlap
        )
        cur.execute(f"ATTACH '{quoted}' AS {attached}")
        try:
            cur.execute("BEGIN TRANSACTION")  # one state: what it copies and what it lists agree
            try:
                cur.execute(f"COPY FROM DATABASE {db_name} TO {attached}")
                snapshots = cur.execute("SELECT id, path FROM snapshots").fetchall()
                checkpoints = cur.execute("SELECT id, path FROM models").fetchall() if models else []
                version = _one(cur.execute("SELECT max(version) FROM schema_version").fetchone())
            finally:
                cur.execute("COMMIT")
        finally:
            cur.execute(f"DETACH {attached}")
        # A snapshot's path is its rankings file, a model's its folder: the folders are copied, and where
        # each row's path lies inside the data directory is kept, for the restore to point it there.
        moved: dict[str, dict[str, str]] = {"snapshots": {}, "models": {}}
        for table, rows in (("snapshots", snapshots), ("models", checkpoints)):
            for row_id, stored in rows:
                rel = _inside(stored, paths.root)
                folder = Path(stored).parent if table == "snapshots" else Path(stored)
                if rel is None or not folder.is_dir():
                    continue
                moved[table][str(row_id)] = str(rel)
                dest_folder = partial / (rel.parent if table == "snapshots" else rel)
                shutil.copytree(folder, dest_folder, dirs_exist_ok=True)
        for secret in (paths.secret_key, paths.admin_key):
            if secret.exists():
                shutil.copy2(secret, partial / secret.name)
        files = {
            str(p.relative_to(partial)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(partial.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
            "data_dir": str(paths.root.resolve()),
            "schema_version": version,
            "snapshots": len(snapshots),
            "models": models,
            "moved": moved,
            "files": files,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _sync_tree(partial)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shown = {k: v for k, v in manifest.items() if k not in ("files", "moved")}
    return {"path": str(dest), **shown, "files": len(files)}


def check_backup(src: Path) -> dict:
    """The backup's manifest, once every file it lists is there with its size and SHA-256."""
    src = src.resolve()
    if not (src / MANIFEST).is_file():
        raise UserError(
            f"{src} is not a rankloop backup (no {MANIFEST}); a directory ending in .partial is one "
            "that was interrupted"
        )
    try:
        manifest = json.loads((src / MANIFEST).read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"the backup's {MANIFEST} is damaged ({e}); nothing was restored") from None
    if manifest.get("format") != FORMAT or DB_FILE not in files:
        raise UserError(f"{src} is not a backup this rankloop reads (format {manifest.get('format')!r})")
    for rel, want in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise UserError(f"the backup's manifest names {rel!r}, outside the backup; nothing was restored")
        path = src / rel
        if not path.is_file():
            raise UserError(f"the backup is damaged: {rel} is missing; nothing was restored")
        if path.stat().st_size != want["bytes"] or _sha256(path) != want["sha256"]:
            raise UserError(
                f"the backup is damaged: {rel} is not what was backed up (its size or SHA-256 differs "
                "from the manifest); nothing was restored. Use another backup"
            )
    return manifest


def restore_backup(src: Path, data_dir: Path) -> dict:
    """Restore the backup at `src` into `data_dir`, which must be empty or not exist."""
    manifest = check_backup(src)
    data_dir = data_dir.resolve()
    if data_dir.exists() and any(data_dir.iterdir()):
        raise UserError(
            f"{data_dir} is not empty; a restore goes into an empty data directory (pick a new --data)"
        )
    made = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        for rel in manifest["files"]:
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src.resolve() / rel, data_dir / rel)
        with Store.open(data_dir / DB_FILE) as store:
            store.check_readable()
            with store.write() as cur:  # what was copied moves with the data directory
                for table, rows in manifest["moved"].items():
                    for row_id, rel in rows.items():
                        if ".." in Path(rel).parts:
                            raise UserError(f"the backup's manifest names {rel!r}; nothing was restored")
                        key = row_id if table == "snapshots" else int(row_id)
                        cur.execute(f"UPDATE {table} SET path = ? WHERE id = ?", [str(data_dir / rel), key])
            counts = store.counts()
        _sync_tree(data_dir)
    except BaseException:
        if made:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for child in data_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return {"path": str(data_dir), "from": str(src), "created_at": manifest["created_at"], "counts": counts}


def prune(folder: Path, keep: int, prefix: str = SCHEDULED) -> list[str]:
    """Delete all but the newest `keep` complete backups named `prefix...` in `folder` (names sort by
    time); backups made by hand stay."""
    done = (
        sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and (p / MANIFEST).is_file())
        if folder.is_dir()
        else []
    )
    gone = done[: max(0, len(done) - keep)]
    for p in gone:
        shutil.rmtree(p)
    return [p.name for p in gone]
