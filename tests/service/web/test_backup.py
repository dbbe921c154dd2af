"""Backups of a running service under load: annotators keep ranking while `rankloop backup` copies the
data directory through the service; the restore has every table and snapshot as the backup saw them,
every ranking acknowledged before the backup began, and nothing that was never acknowledged; a damaged
backup and a non-empty target are refused; scheduled backups keep the newest few."""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import threading
import time
import uuid
from pathlib import Path

import duckdb
import httpx
import pytest

from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.store import Store
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow


def cli(data: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--data", str(data), *args])
    return code, out.getvalue()


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def tables(db: Path) -> dict[str, list]:
    """Every table's rows, sorted (snapshot paths left out: they move with the data directory)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            cols = [
                c
                for (c,) in con.execute(
                    f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{t}'"
                ).fetchall()
            ]
            keep = ", ".join(f'"{c}"' for c in cols if not (t == "snapshots" and c == "path"))
            out[t] = sorted(map(repr, con.execute(f'SELECT {keep} FROM "{t}"').fetchall()))
        return out
    finally:
        con.close()


def test_a_backup_under_load_restores_to_identical_tables_and_snapshots(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=150, k=2, required=1)  # 300 tasks
        for i in range(4):
            add_annotator(store, f"sim-{i}", "simulated")
    env = {
        "RANKLOOP_ANNOTATION__GOLD_RATE": "0",
        "RANKLOOP_BACKUP__EVERY_H": "0.0002",
        "RANKLOOP_BACKUP__KEEP": "2",
    }
    acked: list[tuple[float, str]] = []
    stop, errors = threading.Event(), []
    with running_service(data, env=env) as url:

        def annotate(name: str) -> None:
            headers = {**admin_headers(data), "X-Rankloop-Annotator": name}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                try:
                    while not stop.is_set() and (task := c.get("/api/annotate/next").json()["task"]):
                        sid = uuid.uuid4().hex
                        body = {"task_id": task["task_id"], "submission_id": sid, "ranks": [1, 2]}
                        r = c.post("/api/annotate/submit", json=body)
                        assert r.status_code == 200, r.text
                        acked.append((time.monotonic(), sid))
                except BaseException as e:
                    errors.append(e)

        threads = [threading.Thread(target=annotate, args=(f"sim-{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 40:
            time.sleep(0.05)
        code, out = cli(data, "snapshot", "--eval-fraction", "0.2")
        assert code == 0, out
        began = time.monotonic()
        code, out = cli(data, "backup")  # into <data>/backups, beside the scheduled ones
        assert code == 0 and "backup written to" in out, out
        backup = Path(out.split("backup written to ")[1].split(":")[0])
        time.sleep(2.5)  # the schedule (every 0.72 s) makes a few more, keeping 2
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    before = {sid for at, sid in acked if at < began}
    in_backup = {
        r[0]
        for r in duckdb.connect(str(backup / "rankloop.duckdb"), read_only=True)
        .execute("SELECT submission_id FROM rankings")
        .fetchall()
    }
    assert before <= in_backup, "a ranking acknowledged before the backup began is missing"
    assert in_backup <= {sid for _, sid in acked}  # nothing that was never acknowledged
    assert any(at >= began for at, _ in acked)  # annotators went on ranking once the backup began

    restored = tmp_path / "restored"
    code, out = cli(restored, "restore", str(backup))
    assert code == 0 and "restored the backup" in out, out
    assert tables(restored / "rankloop.duckdb") == tables(backup / "rankloop.duckdb")
    live_snapshots = files(data / "snapshots")
    assert live_snapshots and files(restored / "snapshots") == live_snapshots
    with Store.open(restored / "rankloop.duckdb") as store:  # paths point into the new directory
        (path,) = [r["path"] for r in store.query("SELECT path FROM snapshots")]
        assert path.startswith(str(restored.resolve())) and Path(path).exists()
    code, out = cli(restored, "status")
    assert code == 0

    # Refused: a non-empty target, a damaged backup (nothing restored), an interrupted one.
    code, out = cli(restored, "restore", str(backup))
    assert code == 2 and "is not empty" in out
    damaged = tmp_path / "b2"
    shutil.copytree(backup, damaged)
    db = damaged / "rankloop.duckdb"
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    db.write_bytes(bytes(raw))
    code, out = cli(tmp_path / "r2", "restore", str(damaged))
    assert code == 2 and "backup is damaged: rankloop.duckdb" in out and not (tmp_path / "r2").exists()
    (damaged / "manifest.json").unlink()
    code, out = cli(tmp_path / "r3", "restore", str(damaged))
    assert code == 2 and "not a rankloop backup" in out

    kept = sorted(p.name for p in (data / "backups").iterdir())
    scheduled = [n for n in kept if n.startswith("scheduled-")]
    assert len(scheduled) == 2 and all((data / "backups" / n / "manifest.json").exists() for n in scheduled)
    assert backup.name in kept  # pruning keeps the scheduled ones to 2 and never touches one made by hand
