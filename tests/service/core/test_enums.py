"""The enums of service/core/enums.py and the database's CHECK constraints name the same values: read
from the live catalog of a freshly migrated database (what every migration left, not schema.py's text)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import duckdb
import pytest

from service.core.enums import FINISHED, HUMAN_ROLES, JobStatus, ModelKind, ModelStatus, PromptSource, Role
from service.core.registry import KINDS, STATUSES
from service.core.store import Store

CHECKED: dict[tuple[str, str], type[StrEnum]] = {
    ("prompts", "source"): PromptSource,
    ("models", "kind"): ModelKind,
    ("models", "status"): ModelStatus,
    ("annotators", "role"): Role,
    ("jobs", "status"): JobStatus,
}


def check_values(store: Store) -> dict[tuple[str, str], list[str]]:
    """(table, column) -> the values its `column IN (...)` CHECK allows, in order."""
    out = {}
    for r in store.query(
        "SELECT table_name, constraint_column_names AS cols, expression FROM duckdb_constraints() "
        "WHERE constraint_type = 'CHECK'"
    ):
        found = re.fullmatch(r"""\(+"?(\w+)"? IN \((.*)\)\)+""", r["expression"])
        if found and r["cols"] == [found.group(1)]:
            out[(r["table_name"], found.group(1))] = re.findall(r"'((?:[^']|'')*)'", found.group(2))
    return out


def test_each_enum_is_its_columns_check(store: Store) -> None:
    checks = check_values(store)
    for (table, column), enum in CHECKED.items():
        assert checks.get((table, column)) == [e.value for e in enum], (table, column)


def test_the_derived_sets_come_from_the_enums() -> None:
    assert KINDS == tuple(ModelKind) and STATUSES == tuple(ModelStatus)
    assert set(HUMAN_ROLES) < set(Role) and set(FINISHED) < set(JobStatus)


@pytest.mark.parametrize("table, column", list(CHECKED))
def test_the_database_refuses_a_value_outside_the_enum(store: Store, table: str, column: str) -> None:
    with pytest.raises(duckdb.ConstraintException, match="CHECK constraint"), store.write() as cur:
        rows = {
            "prompts": "INSERT INTO prompts (text, source) VALUES ('x', ?)",
            "models": "INSERT INTO models (kind, name, path, status) VALUES (?, 'm', '/m', ?)",
            "annotators": "INSERT INTO annotators (name, role) VALUES ('a', ?)",
            "jobs": "INSERT INTO jobs (kind, status) VALUES ('sample', ?)",
        }
        if table == "models":
            cur.execute(rows[table], ["nope", "registered"] if column == "kind" else ["sft", "nope"])
        else:
            cur.execute(rows[table], ["nope"])


def test_migration_13_checks_statuses_and_keeps_every_row(tmp_path: Path) -> None:
    """Models and jobs are rebuilt with their status checks; ids, columns and values are kept, and a
    status no rankloop writes any more (a job left 'registering') becomes 'failed', saying so."""
    db = tmp_path / "v12.duckdb"
    with Store.open(db, target_version=12) as old, old.write() as cur:
        cur.execute(
            "INSERT INTO models (kind, name, path, status) VALUES ('pretrained', 'a', '/a', 'active')"
        )
        cur.execute("INSERT INTO models (kind, name, path, status) VALUES ('sft', 'b', '/b', 'odd')")
        cur.execute("DELETE FROM models WHERE name = 'a'")
        cur.execute(
            "INSERT INTO jobs (kind, status, pid, result) VALUES ('reward', 'succeeded', 7, '{\"x\": 1}'), "
            "('reward', 'registering', 8, NULL)"
        )
        columns = {t: [r[0] for r in cur.execute(f"DESCRIBE {t}").fetchall()] for t in ("models", "jobs")}
    with Store.open(db, target_version=13) as new:  # the migration under test (later ones add columns)
        assert {t: [r["column_name"] for r in new.query(f"DESCRIBE {t}")] for t in columns} == columns
        assert new.query("SELECT id, name, status, status_reason FROM models") == [
            {"id": 2, "name": "b", "status": "failed", "status_reason": "status odd is no longer used"}
        ]
        jobs = new.query("SELECT id, status, pid, result, error FROM jobs ORDER BY id")
        assert [(j["id"], j["status"], j["pid"]) for j in jobs] == [(1, "succeeded", 7), (2, "failed", 8)]
        assert jobs[0]["result"] == '{"x": 1}' and "registering" in jobs[1]["error"]
        with new.write() as cur:  # the sequences go on
            cur.execute("INSERT INTO models (kind, name, path) VALUES ('sft', 'c', '/c')")
            cur.execute("INSERT INTO jobs (kind) VALUES ('sample')")
        assert new.scalar("SELECT max(id) FROM models") == 3 and new.scalar("SELECT max(id) FROM jobs") == 3
