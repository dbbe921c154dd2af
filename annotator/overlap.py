"""Adaptive overlap: a task whose rankers disagree gets more rankings, up to a cap, then a reviewer.

When a people's ranking completes a task (its rankings reach `required_rankings`), the mean Kendall
tau-b over every pair of the task's rankings is computed; below `annotation.overlap_tau` the task
needs one ranking more (`required_rankings + 1`), until `annotation.overlap_cap`. A task still below
the threshold at the cap is marked `contested` and waits in the reviewers' queue (annotator/review.py).
This runs in the transaction that stores the ranking, so a crash leaves either both or neither.
Judges' rankings and skips do not count; imports (which no lease hands out) do not trigger it.
"""

from __future__ import annotations

import math
from itertools import combinations

import duckdb

from annotator.agreement import kendall_tau
from service.core.enums import Role


def mean_tau(rankings: list[list[int]]) -> float | None:
    """Mean Kendall tau-b over pairs of rankings (pairs with no order to correlate are left out)."""
    taus = [t for a, b in combinations(rankings, 2) if not math.isnan(t := kendall_tau(a, b))]
    return sum(taus) / len(taus) if taus else None


def extend(
    cur: duckdb.DuckDBPyConnection, required: dict[int, int], tau: float, cap: int
) -> dict[int, int | None]:
    """For tasks that may just have been completed (task id -> its required rankings), ask for more
    or mark them contested, in the caller's transaction. Returns task id -> its new required
    rankings, or None where the task became contested."""
    if not required:
        return {}
    rows = cur.execute(
        """SELECT r.task_id, list(r.ranks) FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           WHERE r.task_id IN (SELECT unnest(?::BIGINT[])) AND NOT r.skipped AND a.role != ?
           GROUP BY r.task_id""",
        [sorted(required), Role.JUDGE],
    ).fetchall()
    changed: dict[int, int | None] = {}
    for task_id, ranks in rows:
        have = len(ranks)  # may exceed what was required (a late submit on an expired lease)
        if have < max(required[task_id], 2):
            continue
        agreement = mean_tau(ranks)
        if agreement is None or agreement >= tau:
            continue
        if have < cap:
            cur.execute("UPDATE tasks SET required_rankings = ? WHERE id = ?", [have + 1, task_id])
            changed[task_id] = have + 1
        else:
            cur.execute("UPDATE tasks SET contested = true WHERE id = ? AND NOT contested", [task_id])
            changed[task_id] = None
    return changed
