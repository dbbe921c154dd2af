"""Adjudication: a reviewer resolves a contested task with a final ranking and a rationale.

Tasks become contested when their rankers keep disagreeing up to the overlap cap (annotator/overlap.py).
Accounts with role reviewer or admin get them, oldest first, with every raw ranking beside the
candidates. The reviewer's ranking is stored in `adjudications`, beside the raw rankings, which stay as
they were; a snapshot takes raw rankings, adjudicated ones (a reviewed task contributes the reviewer's
ranking instead of its raw ones) or both (service/data/snapshots.py).
"""

from __future__ import annotations

import json

import duckdb

from annotator.guidelines import current
from annotator.ranking import RankingError, check_strengths, normalize_ranks
from annotator.task_views import task_view
from service.core.enums import REVIEW_ROLES
from service.core.errors import UserError
from service.core.store import Store

MAX_RATIONALE = 5000


def _check_role(store: Store, reviewer_id: int) -> str:
    role = store.scalar("SELECT role FROM annotators WHERE id = ?", [reviewer_id])
    if role not in REVIEW_ROLES:
        raise UserError(
            f"resolving contested tasks needs role {' or '.join(REVIEW_ROLES)}; this account is {role}"
        )
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


def next_review(store: Store, reviewer_id: int) -> dict | None:
    """The oldest open contested task: what annotators saw, and every raw ranking of it."""
    _check_role(store, reviewer_id)
    waiting = contested(store)
    if not waiting:
        return None
    task_id = waiting[0]["task_id"]
    return task_view(store, task_id) | {
        "rankings": raw_rankings(store, task_id),
        "guidelines": current(store, waiting[0]["batch"]),
        "waiting": len(waiting),
    }


def adjudicate(
    store: Store,
    reviewer_id: int,
    task_id: int,
    ranks: list[int],
    rationale: str,
    strengths: list[str] | None = None,
) -> dict:
    """Store the reviewer's final ranking of a task; a task is resolved once."""
    _check_role(store, reviewer_id)
    rationale = (rationale or "").strip()
    if not rationale:
        raise RankingError(
            "a final ranking needs a rationale: say why it settles the annotators' disagreement"
        )
    if len(rationale) > MAX_RATIONALE:
        raise RankingError(f"the rationale has {len(rationale)} characters; the most is {MAX_RATIONALE}")
    row = (
        store.cursor().execute("SELECT len(sample_ids), batch FROM tasks WHERE id = ?", [task_id]).fetchone()
    )
    if row is None:
        raise RankingError(f"there is no task {task_id}")
    dense = normalize_ranks(ranks, row[0])
    check_strengths(strengths, dense)
    guideline = current(store, row[1])
    try:
        with store.write() as cur:
            new = cur.execute(
                "INSERT INTO adjudications (task_id, reviewer_id, ranks, strengths, rationale, guideline_id) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id, created_at",
                [task_id, reviewer_id, dense, strengths, rationale, guideline["id"] if guideline else None],
            ).fetchone()
    except duckdb.ConstraintException:
        who = store.scalar(
            "SELECT a.name FROM adjudications j JOIN annotators a ON a.id = j.reviewer_id WHERE j.task_id = ?",
            [task_id],
        )
        raise UserError(f"task {task_id} was already resolved by {who}; ask for the next one") from None
    assert new is not None
    return {"adjudication_id": new[0], "task_id": task_id, "ranks": dense, "created_at": new[1]}
