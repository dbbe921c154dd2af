"""The active reward model at work: scoring responses, and active learning for the queue.

`prioritize` scores every open task's candidates and sets the task's `priority` to the
reward model's uncertainty about it: 2 (1 - sigmoid(s1 - s2)) for the two best scores
s1 >= s2, which is 1 when they tie and falls towards 0 as the model grows sure. The
queue serves higher priority first, so annotators see the most informative tasks.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

import pyarrow as pa

from service.core.enums import ModelKind, Role
from service.core.errors import UserError
from service.core.registry import active_model
from service.core.store import Store

if TYPE_CHECKING:  # the scorer itself loads torch, only when a reward model is used
    from reward.score import RewardScorer


class ScorerCache:
    """Keeps the active reward model loaded; reloads when another one becomes active."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model_id: int | None = None
        self._scorer: RewardScorer | None = None

    def get(self, store: Store) -> tuple[int, RewardScorer]:
        from reward.score import RewardScorer

        active = active_model(store, ModelKind.REWARD)
        if active is None:
            raise UserError(
                "no reward model is active: train one with `rankloop train reward` "
                "(or promote one with `rankloop models promote ID`)"
            )
        with self._lock:
            if self._model_id != active["id"]:
                self._scorer, self._model_id = RewardScorer(active["path"]), active["id"]
            assert self._scorer is not None
            return active["id"], self._scorer


def uncertainty(scores: list[float]) -> float:
    top = sorted(scores, reverse=True)
    gap = top[0] - top[1] if len(top) > 1 else math.inf
    return 2 * (1 - 1 / (1 + math.exp(-min(gap, 60))))


def prioritize(store: Store, scorer: RewardScorer) -> int:
    """Set the priority of every task that still needs rankings; returns how many were scored."""
    tasks = store.query(
        """WITH open AS (SELECT t.* FROM tasks t WHERE t.gold_ranks IS NULL AND t.required_rankings >
                         (SELECT count(*) FROM rankings r WHERE r.task_id = t.id AND NOT r.skipped
                          AND r.annotator_id NOT IN (SELECT id FROM annotators WHERE role = ?))),
                cand AS (SELECT o.id, u.sample_id, u.position
                         FROM open o, unnest(o.sample_ids) WITH ORDINALITY AS u(sample_id, position))
           SELECT o.id, p.text AS prompt, p.messages::VARCHAR AS messages, list(s.text ORDER BY c.position) AS texts
           FROM open o JOIN prompts p ON p.id = o.prompt_id JOIN cand c ON c.id = o.id
           JOIN samples s ON s.id = c.sample_id
           GROUP BY o.id, p.text, p.messages::VARCHAR ORDER BY o.id""",
        [Role.JUDGE],
    )
    if not tasks:
        return 0
    scores = scorer.score_rankings(tasks)
    table = pa.table({"id": [t["id"] for t in tasks], "priority": [uncertainty(s) for s in scores]})
    with store.write() as cur:
        cur.complete()
        cur.register("_priorities", table)
        try:
            cur.execute("UPDATE tasks SET priority = n.priority FROM _priorities n WHERE tasks.id = n.id")
        finally:
            cur.unregister("_priorities")
    return len(tasks)
