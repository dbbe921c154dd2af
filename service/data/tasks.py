"""Ranking tasks: one prompt with K candidate samples, in a shuffled display order.

Candidates are drawn from a configurable mix of arms (an arm is a system prompt x
model pair) by weight: each task gets the arms' shares of its K slots (highest
averages, so equal weights give balanced tasks), shuffled, and the order is stored
as the task's `sample_ids`. A sample goes into at most one task, so building again
after a rerun only uses samples that have no task yet. Every task is stored by `insert_tasks`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from service.core.store import Store

MIN_CANDIDATES, MAX_CANDIDATES = 2, 8
Arm = tuple[int, int]  # (system_prompt_id, model_id)


def quotas(
    weights: dict[Arm, float], available: dict[Arm, int], size: int, rng: random.Random
) -> dict[Arm, int]:
    """How many of `size` slots each arm fills: highest averages (D'Hondt) by weight, capped by
    what each arm has left. Equal weights give balanced tasks; ties are broken at random."""
    out: dict[Arm, int] = defaultdict(int)
    for _ in range(size):
        live = [a for a, w in weights.items() if w > 0 and available.get(a, 0) > out[a]]
        if not live:
            break
        best = max(live, key=lambda a: (weights[a] / (out[a] + 1), rng.random()))
        out[best] += 1
    return dict(out)


def unassigned_samples(store: Store, prompt_ids: list[int], arms: list[Arm], params_hash: str) -> list[dict]:
    """Samples of these prompts and arms that no task uses yet."""
    if not prompt_ids or not arms:
        return []
    return store.query(
        """SELECT s.id, s.prompt_id, s.system_prompt_id, s.model_id FROM samples s
           WHERE list_contains(?, s.prompt_id) AND list_contains(?, [s.system_prompt_id, s.model_id])
             AND s.params_hash = ?
             AND s.id NOT IN (SELECT unnest(sample_ids) FROM tasks)
           ORDER BY s.id""",
        [prompt_ids, [list(a) for a in arms], params_hash],
    )


def build_tasks(
    store: Store,
    prompt_ids: list[int],
    weights: dict[Arm, float],
    params_hash: str,
    size: int,
    required_rankings: int = 1,
    seed: int = 0,
    batch: str | None = None,
) -> list[int]:
    """Group unassigned samples into ranking tasks of `size` candidates; returns the new task ids."""
    if not MIN_CANDIDATES <= size <= MAX_CANDIDATES:
        raise ValueError(f"a task holds {MIN_CANDIDATES} to {MAX_CANDIDATES} candidates, got {size}")
    if required_rankings < 1:
        raise ValueError(f"required rankings per task must be at least 1, got {required_rankings}")
    rng = random.Random(seed)
    pools: dict[int, dict[Arm, list[int]]] = defaultdict(lambda: defaultdict(list))
    for s in unassigned_samples(store, prompt_ids, list(weights), params_hash):
        pools[s["prompt_id"]][(s["system_prompt_id"], s["model_id"])].append(s["id"])
    rows: list[dict] = []
    for prompt_id in sorted(pools):
        arm_pool = pools[prompt_id]
        for ids in arm_pool.values():
            rng.shuffle(ids)
        while sum(len(v) for v in arm_pool.values()) >= size:
            take = quotas(weights, {a: len(v) for a, v in arm_pool.items()}, size, rng)
            if sum(take.values()) < size:
                break  # the remaining samples are from arms with weight 0
            candidates = [arm_pool[a].pop() for a, n in take.items() for _ in range(n)]
            rng.shuffle(candidates)  # display order, recorded as the order of sample_ids
            rows.append({"prompt_id": prompt_id, "sample_ids": candidates})
    if not rows:
        return []
    with store.write() as cur:
        return insert_tasks(store, cur, rows, required_rankings, batch)


def insert_tasks(
    store: Store,
    cur: duckdb.DuckDBPyConnection,
    rows: Sequence[dict[str, Any]],
    required_rankings: int,
    batch: str | None,
) -> list[int]:
    """The one INSERT of tasks, in the caller's transaction `cur`: rows are {prompt_id, sample_ids
    (in display order)}; returns the new ids in row order. Every path that makes tasks comes here
    (sampling, human evaluation, imports, clients' votes)."""
    if required_rankings < 1:
        raise ValueError(f"required rankings per task must be at least 1, got {required_rankings}")
    for r in rows:
        ids = r["sample_ids"]
        if len(ids) < MIN_CANDIDATES or len(set(ids)) != len(ids):
            raise ValueError(
                f"a task holds {MIN_CANDIDATES} or more different samples, got {list(ids)} "
                f"for prompt {r['prompt_id']}"
            )
    if not rows:
        return []
    table = pa.table(
        {
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.int64()),
            "sample_ids": pa.array([r["sample_ids"] for r in rows], pa.list_(pa.int64())),
            "required_rankings": pa.array([required_rankings] * len(rows), pa.int32()),
            "batch": pa.array([batch] * len(rows), pa.string()),
        }
    )
    return store.insert_arrow(cur, "tasks", table)
