"""Ranking tasks: arm quotas by weight, balanced candidates, shuffled order, idempotent building."""

import random

import pyarrow as pa
import pytest

from service.core.store import Store
from service.data.tasks import build_tasks, quotas


def test_quotas_equal_weights_are_balanced() -> None:
    rng = random.Random(0)
    assert quotas({(1, 1): 1, (2, 1): 1}, {(1, 1): 4, (2, 1): 4}, 4, rng) == {(1, 1): 2, (2, 1): 2}
    got = quotas({(1, 1): 1, (2, 1): 1, (3, 1): 1}, {(1, 1): 9, (2, 1): 9, (3, 1): 9}, 4, rng)
    assert sorted(got.values()) == [1, 1, 2]


def test_quotas_follow_weights_and_availability() -> None:
    rng = random.Random(0)
    # D'Hondt with weights 3:1 over 4 slots: 3 and 1.
    assert quotas({(1, 1): 3, (2, 1): 1}, {(1, 1): 9, (2, 1): 9}, 4, rng) == {(1, 1): 3, (2, 1): 1}
    # An arm that runs out hands its slots to the others; weight 0 gets none.
    assert quotas({(1, 1): 3, (2, 1): 1, (3, 1): 0}, {(1, 1): 1, (2, 1): 9, (3, 1): 9}, 4, rng) == {
        (1, 1): 1,
        (2, 1): 3,
    }


def insert_samples(store: Store, per_arm: dict[tuple[int, int], int], prompt_id: int = 1) -> None:
    rows = [
        {
            "prompt_id": prompt_id,
            "system_prompt_id": sp,
            "model_id": m,
            "params": "{}",
            "params_hash": "h",
            "sample_index": i,
            "text": f"sp{sp}-m{m}-{i}",
        }
        for (sp, m), n in per_arm.items()
        for i in range(n)
    ]
    with store.write() as cur:
        store.insert_arrow(cur, "samples", pa.Table.from_pylist(rows))


def test_build_tasks_mixes_arms_and_records_order(store: Store) -> None:
    insert_samples(store, {(1, 1): 4, (2, 1): 4}, prompt_id=1)
    insert_samples(store, {(1, 1): 4, (2, 1): 4}, prompt_id=2)
    ids = build_tasks(store, [1, 2], {(1, 1): 1.0, (2, 1): 1.0}, "h", size=4, required_rankings=3, seed=1)
    assert len(ids) == 4
    tasks = store.query("SELECT * FROM tasks ORDER BY id")
    used = [sid for t in tasks for sid in t["sample_ids"]]
    assert len(used) == len(set(used)) == 16  # every sample in exactly one task
    arms = {r["id"]: r["system_prompt_id"] for r in store.query("SELECT id, system_prompt_id FROM samples")}
    for t in tasks:
        assert sorted(arms[s] for s in t["sample_ids"]) == [1, 1, 2, 2]  # balanced
        assert t["required_rankings"] == 3
        prompt_of = {r["id"]: r["prompt_id"] for r in store.query("SELECT id, prompt_id FROM samples")}
        assert {prompt_of[s] for s in t["sample_ids"]} == {t["prompt_id"]}
    # The display order is shuffled, not the insertion order.
    assert any(t["sample_ids"] != sorted(t["sample_ids"]) for t in tasks)
    # Building again finds no unassigned samples.
    assert build_tasks(store, [1, 2], {(1, 1): 1.0, (2, 1): 1.0}, "h", size=4) == []


def test_build_tasks_only_uses_selected_arms_and_params(store: Store) -> None:
    insert_samples(store, {(1, 1): 3, (2, 1): 3, (3, 1): 3})
    ids = build_tasks(store, [1], {(1, 1): 1.0, (2, 1): 1.0}, "h", size=3)
    assert len(ids) == 2
    used = store.query("SELECT unnest(sample_ids) AS s FROM tasks")
    sps = {
        r["system_prompt_id"]
        for r in store.query(
            "SELECT system_prompt_id FROM samples WHERE list_contains(?, id)", [[u["s"] for u in used]]
        )
    }
    assert sps == {1, 2}
    assert build_tasks(store, [1], {(3, 1): 1.0}, "other-params", size=3) == []


@pytest.mark.parametrize("size", [1, 9])
def test_task_size_bounds(store: Store, size: int) -> None:
    with pytest.raises(ValueError, match="2 to 8 candidates"):
        build_tasks(store, [1], {(1, 1): 1.0}, "h", size=size)
