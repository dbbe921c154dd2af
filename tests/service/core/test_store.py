"""The DuckDB store: migrations on fresh and older databases, transactions, locking, durability."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from service.core.errors import DataDirBusy, UserError
from service.core.registry import find_or_register, get_model, lineage, list_models, register_model
from service.core.schema import LATEST
from service.core.store import Store
from tests.support import REPO

TABLES = {
    "system_prompts",
    "prompts",
    "models",
    "samples",
    "tasks",
    "annotators",
    "rankings",
    "snapshots",
    "jobs",
}


def tables(store: Store) -> set[str]:
    return {r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")}


def test_fresh_database_has_every_table_and_version(store: Store) -> None:
    assert TABLES | {"schema_version"} <= tables(store)
    assert store.schema_version() == LATEST
    versions = [r["version"] for r in store.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, LATEST + 1))
    for t in TABLES:
        cols = {
            r["column_name"]
            for r in store.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [t]
            )
        }
        assert {"id", "created_at"} <= cols, t


def test_older_database_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    with Store.open(db, target_version=1) as old:
        assert old.schema_version() == 1
        with old.write() as cur:
            cur.execute("INSERT INTO prompts (text, source) VALUES ('kept', 'seed')")
            for _ in range(2):  # version 1 has no sample identity index: duplicates go in
                cur.execute(
                    """INSERT INTO samples (prompt_id, system_prompt_id, model_id, params, params_hash,
                       sample_index, text) VALUES (1, 1, 1, '{}', 'h', 0, 'x')"""
                )
        with old.write() as cur:
            cur.execute("DELETE FROM samples WHERE id = 2")
    with Store.open(db) as new:
        assert new.schema_version() == LATEST
        assert new.scalar("SELECT text FROM prompts") == "kept"
        with pytest.raises(duckdb.ConstraintException):  # migration 2's index now guards identity
            with new.write() as cur:
                cur.execute(
                    """INSERT INTO samples (prompt_id, system_prompt_id, model_id, params, params_hash,
                       sample_index, text) VALUES (1, 1, 1, '{}', 'h', 0, 'again')"""
                )
        assert new.scalar("SELECT count(*) FROM samples") == 1
        assert new.migrate() == []  # idempotent


def test_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.duckdb"
    with Store.open(db) as s, s.write() as cur:
        cur.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(UserError, match="newer than this rankloop knows"):
        Store.open(db)


def test_failed_write_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as cur:
        cur.execute("INSERT INTO prompts (text, source) VALUES ('half', 'seed')")
        raise RuntimeError("boom")
    assert store.scalar("SELECT count(*) FROM prompts") == 0


def test_bad_rows_violate_checks(store: Store) -> None:
    with pytest.raises(duckdb.ConstraintException), store.write() as cur:
        cur.execute("INSERT INTO prompts (text, source) VALUES ('x', 'nowhere')")
    assert store.counts()["prompts"] == 0


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def test_database_held_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    Store.open(db).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(DataDirBusy) as e:
            Store.open(db)
        msg = str(e.value)
        assert str(db) in msg and "rankloop serve" in msg and f"PID {holder.pid}" in msg
    finally:
        holder.kill()
        holder.wait()


WRITER = """
import sys
from service.core.store import Store
store = Store.open(sys.argv[1])
for i in range(50):
    with store.write() as cur:
        cur.execute("INSERT INTO prompts (text, source) VALUES (?, 'seed')", [f"p{i}"])
    print(i, flush=True)
import time; time.sleep(60)
"""


def test_acknowledged_writes_survive_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "crash.duckdb"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    acknowledged = -1
    assert writer.stdout is not None
    deadline = time.monotonic() + 60
    while acknowledged < 49 and time.monotonic() < deadline:
        acknowledged = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)  # no checkpoint, no clean close
    writer.wait()
    with Store.open(db) as s:
        assert s.scalar("SELECT count(*) FROM prompts") == 50


def test_registry_and_lineage(store: Store, tmp_path: Path) -> None:
    base = register_model(store, "pretrained", tmp_path / "base", config={"size": "tiny"})
    sft = register_model(store, "sft", tmp_path / "sft", parent_id=base)
    with store.write() as cur:
        cur.execute(
            "INSERT INTO snapshots (id, path, counts) VALUES ('abc123', '/s.parquet', '{\"rankings\": 7}')"
        )
    pol = register_model(
        store,
        "policy",
        tmp_path / "pol",
        parent_id=sft,
        snapshot_id="abc123",
        metrics={"win_rate": 0.6},
        status="candidate",
    )
    assert [m["id"] for m in list_models(store)] == [base, sft, pol]
    assert [m["kind"] for m in list_models(store, "sft")] == ["sft"]
    chain = lineage(store, pol)
    assert [(m["id"], m["depth"]) for m in chain] == [(pol, 0), (sft, 1), (base, 2)]
    assert chain[0]["snapshot_path"] == "/s.parquet" and json.loads(chain[0]["snapshot_counts"]) == {
        "rankings": 7
    }
    assert get_model(store, pol)["metrics"] == {"win_rate": 0.6}
    assert get_model(store, base)["config"] == {"size": "tiny"}
    assert find_or_register(store, tmp_path / "sft") == sft
    assert find_or_register(store, tmp_path / "new") == pol + 1


def test_registry_rejects_bad_input(store: Store, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="valid: pretrained, sft, reward, policy, external"):
        register_model(store, "critic", tmp_path)
    with pytest.raises(UserError, match="parent model 42"):
        register_model(store, "sft", tmp_path, parent_id=42)
    with pytest.raises(UserError, match="no model with id 5"):
        lineage(store, 5)
    assert store.counts()["models"] == 0


def test_version_2_database_gains_the_annotation_schema(tmp_path: Path) -> None:
    db = tmp_path / "v2.duckdb"
    with Store.open(db, target_version=2) as old, old.write() as cur:
        cur.execute("INSERT INTO tasks (prompt_id, sample_ids) VALUES (1, [1, 2])")
        cur.execute("INSERT INTO annotators (name, role) VALUES ('a', 'annotator')")
        cur.execute(
            "INSERT INTO rankings (task_id, annotator_id, ranks, submission_id) VALUES (1, 1, [2, 1], 's')"
        )
    with Store.open(db) as new:
        assert new.schema_version() == LATEST >= 3
        task = new.query("SELECT * FROM tasks")[0]
        assert task["sample_ids"] == [1, 2] and task["gold_ranks"] is None and task["batch"] is None
        ranking = new.query("SELECT * FROM rankings")[0]
        assert ranking["ranks"] == [2, 1] and ranking["gold_agreement"] is None
        assert "leases" not in tables(new)  # migration 10 moved leases to memory
        with new.write() as cur:  # the new columns are writable in place
            cur.execute("UPDATE tasks SET gold_ranks = [1, 2], batch = 'b' WHERE id = 1")
        assert new.scalar("SELECT gold_ranks FROM tasks") == [1, 2]


def test_version_7_prompts_keep_their_ids_and_gain_the_eval_source(tmp_path: Path) -> None:
    db = tmp_path / "v7.duckdb"
    with Store.open(db, target_version=7) as old, old.write() as cur:
        cur.execute(
            "INSERT INTO prompts (text, source, messages) VALUES ('a', 'seed', '[]'), ('b', 'import', '[]')"
        )
        cur.execute("DELETE FROM prompts WHERE text = 'a'")
    with Store.open(db) as new:
        assert new.query("SELECT id, text, source FROM prompts") == [
            {"id": 2, "text": "b", "source": "import"}
        ]
        with new.write() as cur:
            cur.execute("INSERT INTO prompts (text, source) VALUES ('c', 'eval')")
        assert new.scalar("SELECT id FROM prompts WHERE text = 'c'") == 3  # the id sequence goes on
