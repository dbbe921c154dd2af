"""What happened, for webhooks: read from the tables themselves, past a cursor per source kept in
`webhook_cursors`, so an event is found however it was made (the app, the API, a command run with no
service) and none is lost or found twice: the caller stores the deliveries and moves the cursors in
one transaction. A source with no cursor yet starts at now (history is not replayed).

    ranking.created      a ranking (or skip) was stored
    task.completed       a task got its last required ranking (skips do not count)
    batch.completed      every task of a batch (a sampling round's tasks) is complete
    job.finished         a job succeeded, failed or was cancelled
    model.registered     a model was registered
    model.promoted       a model became the active one of its kind
    deployment.switched  a deploy, promote or rollback changed what serves
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

EVENTS = (
    "ranking.created",
    "task.completed",
    "batch.completed",
    "job.finished",
    "model.registered",
    "model.promoted",
    "deployment.switched",
)
Event = tuple[str, dict[str, Any]]


def _cursor(cur: duckdb.DuckDBPyConnection, source: str, now: Any) -> Any:
    row = cur.execute("SELECT value FROM webhook_cursors WHERE event = ?", [source]).fetchone()
    if row is None:
        _move(cur, source, now)
        return now
    return json.loads(row[0])


def _move(cur: duckdb.DuckDBPyConnection, source: str, value: Any) -> None:
    cur.execute(
        "INSERT INTO webhook_cursors (event, value) VALUES (?, ?) "
        "ON CONFLICT (event) DO UPDATE SET value = excluded.value",
        [source, json.dumps(value)],
    )


def _rows(cur: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    result = cur.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, r, strict=True)) for r in result.fetchall()]


def fingerprint(cur: duckdb.DuckDBPyConnection) -> tuple:
    """What moves when any source has something new (read without the write lock): the dispatcher
    opens a write transaction only when it changed, so an idle service commits nothing (a commit makes
    the queue's book read every task again)."""
    return cur.execute(
        """SELECT (SELECT coalesce(max(id), 0) FROM rankings), (SELECT coalesce(max(id), 0) FROM jobs),
                  (SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')),
                  (SELECT coalesce(max(id), 0) FROM models),
                  (SELECT list(id ORDER BY id) FROM models WHERE status = 'active'),
                  (SELECT coalesce(max(id), 0) FROM deployments)"""
    ).fetchone()  # type: ignore[return-value]


def read_events(cur: duckdb.DuckDBPyConnection) -> list[Event]:
    """The events past the cursors, oldest first per source; the cursors are moved past them (in the
    caller's transaction)."""
    return [*_rankings(cur), *_jobs(cur), *_models(cur), *_deployments(cur)]


def _rankings(cur: duckdb.DuckDBPyConnection) -> list[Event]:
    top = cur.execute("SELECT coalesce(max(id), 0) FROM rankings").fetchone()[0]  # type: ignore[index]
    last = _cursor(cur, "rankings", top)
    if top <= last:
        return []
    out: list[Event] = []
    for r in _rows(
        cur,
        "SELECT r.id AS ranking_id, r.task_id, a.name AS annotator, a.role, r.ranks, r.skipped, r.created_at "
        "FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE r.id > ? AND r.id <= ? ORDER BY r.id",
        [last, top],
    ):
        out.append(("ranking.created", {**r, "created_at": r["created_at"].isoformat()}))
    # The ranking that brought a task to its required count completes it.
    completed = _rows(
        cur,
        """WITH n AS (
             SELECT id, task_id, row_number() OVER (PARTITION BY task_id ORDER BY id) AS k FROM rankings
             WHERE NOT skipped AND task_id IN (SELECT task_id FROM rankings WHERE id > ? AND id <= ?))
           SELECT n.id AS ranking_id, t.id AS task_id, t.batch FROM n JOIN tasks t ON t.id = n.task_id
           WHERE n.id > ? AND n.id <= ? AND n.k = t.required_rankings ORDER BY n.id""",
        [last, top, last, top],
    )
    out += [("task.completed", c) for c in completed]
    for batch in dict.fromkeys(c["batch"] for c in completed if c["batch"]):
        counts = _rows(
            cur,
            """SELECT count(*) AS tasks, count(*) FILTER (WHERE (SELECT count(*) FROM rankings r
                 WHERE r.task_id = t.id AND NOT r.skipped AND r.id <= ?) < t.required_rankings) AS open
               FROM tasks t WHERE t.batch = ?""",
            [top, batch],
        )[0]
        if counts["open"] == 0:
            out.append(("batch.completed", {"batch": batch, "tasks": counts["tasks"]}))
    _move(cur, "rankings", top)
    return out


def _jobs(cur: duckdb.DuckDBPyConnection) -> list[Event]:
    top = cur.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0]  # type: ignore[index]
    # The jobs not yet finished when last read (their ids), and the highest id read.
    unfinished = [
        r[0]
        for r in cur.execute(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY id"
        ).fetchall()
    ]
    state = _cursor(cur, "jobs", {"seen": top, "running": unfinished})  # a first read watches those running
    watched = [*state["running"], *range(state["seen"] + 1, top + 1)]
    if not watched:
        return []
    rows = _rows(
        cur,
        "SELECT id AS job_id, kind, status, error, result_model_id, finished_at FROM jobs WHERE list_contains(?, id) "
        "ORDER BY id",
        [watched],
    )
    done = [r for r in rows if r["status"] in ("succeeded", "failed", "cancelled")]
    running = [r["job_id"] for r in rows if r not in done]
    _move(cur, "jobs", {"seen": top, "running": running})
    return [
        ("job.finished", {**r, "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None})
        for r in done
    ]


def _models(cur: duckdb.DuckDBPyConnection) -> list[Event]:
    top = cur.execute("SELECT coalesce(max(id), 0) FROM models").fetchone()[0]  # type: ignore[index]
    active = [
        r[0] for r in cur.execute("SELECT id FROM models WHERE status = 'active' ORDER BY id").fetchall()
    ]
    state = _cursor(cur, "models", {"seen": top, "active": active})
    out: list[Event] = []
    if top > state["seen"]:
        for r in _rows(
            cur,
            "SELECT id AS model_id, kind, name, parent_id, status FROM models WHERE id > ? AND id <= ? ORDER BY id",
            [state["seen"], top],
        ):
            out.append(("model.registered", r))
    for r in _rows(
        cur,
        "SELECT id AS model_id, kind, name, status_reason AS reason FROM models WHERE list_contains(?, id) "
        "AND NOT list_contains(?, id) ORDER BY id",
        [active, state["active"]],
    ):
        out.append(("model.promoted", r))
    if out or active != state["active"]:
        _move(cur, "models", {"seen": top, "active": active})
    return out


def _deployments(cur: duckdb.DuckDBPyConnection) -> list[Event]:
    top = cur.execute("SELECT coalesce(max(id), 0) FROM deployments").fetchone()[0]  # type: ignore[index]
    last = _cursor(cur, "deployments", top)
    if top <= last:
        return []
    rows = _rows(
        cur,
        "SELECT id AS deployment_id, model_id, canary_model_id, canary_pct, replicas, fallback_model_id, status, note "
        "FROM deployments WHERE id > ? AND id <= ? ORDER BY id",
        [last, top],
    )
    _move(cur, "deployments", top)
    return [("deployment.switched", r) for r in rows]
