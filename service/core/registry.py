"""The model registry: every checkpoint rankloop knows, what it came from, and its status.

kind is pretrained | sft | reward | policy; parent_id points to the checkpoint a model
was trained from, snapshot_id to the data it was trained on, so lineage is a query.
This is the one module that changes a model's status (register, promote, retire): jobs,
gates and `rankloop models promote` all come here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from service.core.enums import ModelKind, ModelStatus
from service.core.errors import NotFound, UserError
from service.core.store import Store

# external: responses that came from outside rankloop (imported preference data).
KINDS = tuple(ModelKind)
STATUSES = tuple(ModelStatus)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    for key in ("config", "metrics"):
        if isinstance(r.get(key), str):
            r[key] = json.loads(r[key])
    return r


def register_model(
    store: Store,
    kind: str,
    path: str | Path,
    *,
    name: str | None = None,
    parent_id: int | None = None,
    snapshot_id: str | None = None,
    config: dict | None = None,
    metrics: dict | None = None,
    status: str = ModelStatus.REGISTERED,
    status_reason: str | None = None,
) -> int:
    """Add a checkpoint to the registry and return its id."""
    if kind not in KINDS:
        raise UserError(f"unknown model kind {kind!r}; valid: {', '.join(KINDS)}")
    if status not in STATUSES:
        raise UserError(f"unknown model status {status!r}; valid: {', '.join(STATUSES)}")
    path = Path(path).resolve()
    with store.write() as cur:
        if (
            parent_id is not None
            and not cur.execute("SELECT 1 FROM models WHERE id = ?", [parent_id]).fetchone()
        ):
            raise UserError(f"parent model {parent_id} is not in the registry")
        return _new_id(
            cur.execute(
                """INSERT INTO models (kind, name, path, parent_id, snapshot_id, config, metrics, status,
                   status_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    str(kind),
                    name or path.name,
                    str(path),
                    parent_id,
                    snapshot_id,
                    json.dumps(config or {}),
                    json.dumps(metrics or {}),
                    str(status),
                    status_reason,
                ],
            ).fetchone()
        )


def get_model(store: Store, model_id: int) -> dict[str, Any]:
    rows = store.query("SELECT * FROM models WHERE id = ?", [model_id])
    if not rows:
        raise NotFound(f"no model with id {model_id}; `rankloop models list` shows the registry")
    return _row(rows[0])


def find_or_register(store: Store, path: str | Path, kind: str = ModelKind.PRETRAINED) -> int:
    """The id of the newest model registered at `path`, registering it when it is new."""
    resolved = str(Path(path).resolve())
    found = store.scalar("SELECT id FROM models WHERE path = ? ORDER BY id DESC LIMIT 1", [resolved])
    return found if found is not None else register_model(store, kind, resolved)


def list_models(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM models" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
    return [_row(r) for r in store.query(sql, [kind] if kind else [])]


def lineage(store: Store, model_id: int) -> list[dict[str, Any]]:
    """The model and its ancestors (parent chain), newest first, each with its snapshot."""
    get_model(store, model_id)  # clear error on an unknown id
    return [
        _row(r)
        for r in store.query(
            """WITH RECURSIVE chain(id, depth) AS (
                   SELECT ?::BIGINT, 0
                   UNION ALL
                   SELECT m.parent_id, c.depth + 1 FROM chain c JOIN models m ON m.id = c.id
                   WHERE m.parent_id IS NOT NULL)
               SELECT m.*, c.depth, s.path AS snapshot_path, s.counts AS snapshot_counts
               FROM chain c JOIN models m ON m.id = c.id LEFT JOIN snapshots s ON s.id = m.snapshot_id
               ORDER BY c.depth""",
            [model_id],
        )
    ]


def active_model(store: Store, kind: str) -> dict[str, Any] | None:
    rows = store.query(
        "SELECT * FROM models WHERE kind = ? AND status = ? ORDER BY id DESC LIMIT 1",
        [kind, ModelStatus.ACTIVE],
    )
    return _row(rows[0]) if rows else None


def promote(store: Store, model_id: int, reason: str) -> None:
    """Make a model the active one of its kind; the previous active one is retired. Both say why."""
    model = get_model(store, model_id)
    if model["kind"] == ModelKind.EXTERNAL:
        raise UserError(f"model {model_id} is external (imported responses); it cannot be made active")
    with store.write() as cur:
        _activate(cur, model_id, model["kind"], reason)


def _activate(cur: duckdb.DuckDBPyConnection, model_id: int, kind: str, reason: str) -> None:
    cur.execute(
        "UPDATE models SET status = ?, status_reason = ? WHERE kind = ? AND status = ? AND id <> ?",
        [ModelStatus.RETIRED, f"replaced by #{model_id}", kind, ModelStatus.ACTIVE, model_id],
    )
    cur.execute(
        "UPDATE models SET status = ?, status_reason = ? WHERE id = ?", [ModelStatus.ACTIVE, reason, model_id]
    )


def _new_id(row: tuple[Any, ...] | None) -> int:
    assert row is not None  # an INSERT ... RETURNING gives its row
    return row[0]


def register_trained(
    cur: duckdb.DuckDBPyConnection,
    kind: str,
    path: str | Path,
    base_model: str | Path,
    *,
    name: str,
    snapshot_id: str | None,
    config: dict,
    metrics: dict,
    approved: bool,
    reason: str,
    gate: bool = True,
) -> int:
    """Register a checkpoint a job trained, inside the caller's transaction `cur` (the job is
    finished in the same one): its parent is the base checkpoint (registered as pretrained when
    new); `approved` makes it the active model of its kind and retires the previous one."""
    base = str(Path(base_model).resolve())
    parent = cur.execute("SELECT id FROM models WHERE path = ? ORDER BY id DESC LIMIT 1", [base]).fetchone()
    parent_id = (
        parent[0]
        if parent
        else _new_id(
            cur.execute(
                "INSERT INTO models (kind, name, path) VALUES (?, ?, ?) RETURNING id",
                [ModelKind.PRETRAINED, Path(base).name, base],
            ).fetchone()
        )
    )
    status, prefix = (
        (ModelStatus.ACTIVE, "gate passed: ") if approved else (ModelStatus.CANDIDATE, "gate refused: ")
    )
    prefix = prefix if gate else ""
    model_id = _new_id(
        cur.execute(
            """INSERT INTO models (kind, name, path, parent_id, snapshot_id, config, metrics, status, status_reason)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [
                kind,
                name,
                str(Path(path).resolve()),
                parent_id,
                snapshot_id,
                json.dumps(config),
                json.dumps(metrics),
                status,
                prefix + reason,
            ],
        ).fetchone()
    )
    if approved:
        _activate(cur, model_id, kind, prefix + reason)
    return model_id


def record_evaluation(
    cur: duckdb.DuckDBPyConnection,
    model_id: int,
    evaluation: dict,
    wins: bool | None,
    reason: str,
    baseline_id: int,
) -> tuple[str, str]:
    """Add an evaluation to a model's metrics inside the caller's transaction and apply the gate
    (`wins` None: not asked). The gate decides only for a candidate compared with the model it
    would replace: the active model of its kind, or its parent when none is active (checked here,
    in the transaction, so a promotion meanwhile is seen). Returns (status, gate outcome)."""
    found = cur.execute(
        "SELECT kind, status, metrics, parent_id FROM models WHERE id = ?", [model_id]
    ).fetchone()
    if found is None:
        raise NotFound(f"no model with id {model_id}; `rankloop models list` shows the registry")
    kind, status, metrics, parent = found
    metrics = json.loads(metrics) if isinstance(metrics, str) else (metrics or {})
    metrics["evaluations"] = [*metrics.get("evaluations", []), evaluation]
    cur.execute("UPDATE models SET metrics = ? WHERE id = ?", [json.dumps(metrics), model_id])
    if wins is None:
        return status, "not applied"
    if status != ModelStatus.CANDIDATE:
        return status, f"not applied (the model is {status}, not a candidate)"
    active = cur.execute(
        "SELECT id FROM models WHERE kind = ? AND status = ? ORDER BY id DESC LIMIT 1",
        [kind, ModelStatus.ACTIVE],
    ).fetchone()
    expected = active[0] if active else parent
    if baseline_id != expected:
        return status, (
            f"not applied (the baseline #{baseline_id} is not the model it would replace, "
            f"#{expected}: {'the active ' + kind if active else 'its parent'})"
        )
    if wins:
        _activate(cur, model_id, kind, "gate passed: " + reason)
        return ModelStatus.ACTIVE, "passed"
    cur.execute("UPDATE models SET status_reason = ? WHERE id = ?", ["gate refused: " + reason, model_id])
    return status, "refused"
