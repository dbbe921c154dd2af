"""Adjudication: a reviewer resolves a contested task with a final ranking and a rationale.

Tasks become contested when their rankers keep disagreeing up to the overlap cap (annotator/overlap.py).
Accounts with role reviewer or admin get them, oldest first, with every raw ranking beside the
candidates. The reviewer's ranking is stored in `adjudications`, beside the raw rankings, which stay as
they were; a snapshot takes raw rankings, adjudicated ones (a reviewed task contributes the reviewer's
ranking instead of its raw ones) or both (service/data/snapshots.py).
"""

from __future__ import annotations

import json
import threading
import time

import duckdb

from annotator import quiz
from annotator.guidelines import current
from annotator.ranking import RankingError, check_strengths, normalize_ranks
from annotator.task_views import task_view
from service.core.enums import REVIEW_ROLES
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store

MAX_RATIONALE = 5000
HOLD_S = 600.0  # a contested task shown to a reviewer is theirs this long
_HELD = "review_holds"  # store.caches key: task id -> (reviewer id, monotonic deadline)
_LOCK = threading.Lock()


def _check_role(store: Store, reviewer_id: int, settings: AnnotationOptions | None) -> str:
    role = store.scalar("SELECT role FROM annotators WHERE id = ?", [reviewer_id])
    if role not in REVIEW_ROLES:
        raise UserError(
            f"resolving contested tasks needs role {' or '.join(REVIEW_ROLES)}; this account is {role}"
        )
    if settings is not None and quiz.required(store, reviewer_id, settings):
        raise UserError("pass the qualification quiz first (ask for your next task to take it)")
    return role


def contested(store: Store, resolved: bool = False) -> list[dict]:
    """Contested tasks, oldest first: open ones (or, with resolved=True, every one and its outcome)."""
    return store.query(
        """SELECT t.id AS task_id, t.batch, p.text AS prompt, t.required_rankings,
                  (SELECT count(*) FROM rankings r WHERE r.task_id = t.id AND NOT r.skipped) AS rankings,
                  j.ranks AS final_ranks, a.name AS reviewer, j.rationale, j.created_at AS resolved_at
           FROM tasks t JOIN prompts p ON p.id = t.prompt_id
           LEFT JOIN adjudications j ON j.task_id = t.id LEFT JOIN annotators a ON a.id = j.reviewer_id
           WHERE t.contested AND (? OR j.id IS NULL) ORDER BY t.id""",
        [resolved],
    )


def raw_rankings(store: Store, task_id: int) -> list[dict]:
    rows = store.query(
        """SELECT a.name AS annotator, r.ranks, r.strengths, r.rationale, r.flags, r.created_at
           FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           WHERE r.task_id = ? AND NOT r.skipped ORDER BY r.id""",
        [task_id],
    )
    for r in rows:
        r["flags"] = json.loads(r["flags"] or "[]")
    return rows


def _ranked_by(store: Store, reviewer_id: int) -> set[int]:
    rows = (
        store.cursor()
        .execute("SELECT task_id FROM rankings WHERE annotator_id = ?", [reviewer_id])
        .fetchall()
    )
    return {tid for (tid,) in rows}


def next_review(store: Store, reviewer_id: int, settings: AnnotationOptions | None = None) -> dict | None:
    """The oldest open contested task this reviewer did not rank and no other reviewer holds (a task
    shown to a reviewer is held for them for HOLD_S, so two reviewers do not resolve one task twice):
    what annotators saw, and every raw ranking of it."""
    _check_role(store, reviewer_id, settings)
    mine = _ranked_by(store, reviewer_id)
    waiting = [t for t in contested(store) if t["task_id"] not in mine]
    now = time.monotonic()
    with _LOCK:
        held = store.caches.setdefault(_HELD, {})
        for tid, (_, until) in list(held.items()):
            if until <= now:
                del held[tid]
        free = [t for t in waiting if held.get(t["task_id"], (reviewer_id, 0))[0] == reviewer_id]
        if not free:
            return None
        task = free[0]
        held[task["task_id"]] = (reviewer_id, now + HOLD_S)
    return task_view(store, task["task_id"]) | {
        "rankings": raw_rankings(store, task["task_id"]),
        "guidelines": current(store, task["batch"]),
        "waiting": len(waiting),
    }


def adjudicate(
    store: Store,
    reviewer_id: int,
    task_id: int,
    ranks: list[int],
    rationale: str,
    strengths: list[str] | None = None,
    settings: AnnotationOptions | None = None,
) -> dict:
    """Store the reviewer's final ranking of a contested task; a task is resolved once. The same
    resolution sent again (a retry) answers as the first time; a reviewer cannot resolve a task they
    ranked themselves."""
    _check_role(store, reviewer_id, settings)
    rationale = (rationale or "").strip()
    if not rationale:
        raise RankingError(
            "a final ranking needs a rationale: say why it settles the annotators' disagreement"
        )
    if len(rationale) > MAX_RATIONALE:
        raise RankingError(f"the rationale has {len(rationale)} characters; the most is {MAX_RATIONALE}")
    row = (
        store.cursor()
        .execute("SELECT len(sample_ids), batch, contested FROM tasks WHERE id = ?", [task_id])
        .fetchone()
    )
    if row is None:
        raise RankingError(f"there is no task {task_id}")
    dense = normalize_ranks(ranks, row[0])
    check_strengths(strengths, dense)
    prior = store.query(
        """SELECT j.id, j.ranks, j.created_at, j.reviewer_id, a.name FROM adjudications j
           JOIN annotators a ON a.id = j.reviewer_id WHERE j.task_id = ?""",
        [task_id],
    )
    if prior:
        p = prior[0]
        if p["reviewer_id"] == reviewer_id and p["ranks"] == dense:
            return {
                "adjudication_id": p["id"],
                "task_id": task_id,
                "ranks": dense,
                "created_at": p["created_at"],
                "duplicate": True,
            }
        raise UserError(f"task {task_id} was already resolved by {p['name']}; ask for the next one")
    if not row[2]:
        raise UserError(
            f"task {task_id} is not contested: only tasks whose rankers kept disagreeing go to review "
            "(`rankloop review contested` lists them)"
        )
    if task_id in _ranked_by(store, reviewer_id):
        raise UserError(f"you ranked task {task_id} yourself; another reviewer resolves it")
    guideline = current(store, row[1])
    try:
        with store.write() as cur:
            new = cur.execute(
                "INSERT INTO adjudications (task_id, reviewer_id, ranks, strengths, rationale, guideline_id) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id, created_at",
                [task_id, reviewer_id, dense, strengths, rationale, guideline["id"] if guideline else None],
            ).fetchone()
    except duckdb.ConstraintException:  # resolved meanwhile by another reviewer
        raise UserError(
            f"task {task_id} was just resolved by another reviewer; ask for the next one"
        ) from None
    assert new is not None
    with _LOCK:
        store.caches.get(_HELD, {}).pop(task_id, None)
    return {
        "adjudication_id": new[0],
        "task_id": task_id,
        "ranks": dense,
        "created_at": new[1],
        "duplicate": False,
    }
