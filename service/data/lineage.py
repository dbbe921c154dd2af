"""Where a model came from, as `rankloop models show ID` and `GET /admin/models/{id}` print it.

The chain of checkpoints (policy -> parent -> ... -> pretrained, from the registry), the
data each was trained on (snapshot -> rankings, prompts, annotators, system prompts), the
reward model a policy was trained against (online RL) or judged by (its evaluations), with
that reward model's own snapshot, and the evaluation figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from service.core.enums import ModelKind
from service.core.registry import get_model, lineage
from service.core.store import Store


def snapshot_summary(store: Store, snapshot_id: str) -> dict:
    """Counts of a snapshot, with the names of its annotators and system prompts."""
    import pyarrow.parquet as pq

    rows = store.query("SELECT path, counts FROM snapshots WHERE id = ?", [snapshot_id])
    if not rows:
        return {"id": snapshot_id, "missing": True}
    counts = json.loads(rows[0]["counts"]) if isinstance(rows[0]["counts"], str) else rows[0]["counts"]
    out = {
        "id": snapshot_id,
        "path": rows[0]["path"],
        **{
            k: counts.get(k)
            for k in ("rankings", "train_rankings", "eval_rankings", "prompts", "eval_prompts", "annotators")
        },
    }
    if Path(rows[0]["path"]).exists():
        table = pq.read_table(rows[0]["path"], columns=["annotator", "system_prompts"]).to_pydict()
        out["annotator_names"] = sorted(set(table["annotator"]))
        out["system_prompts"] = sorted({s for row in table["system_prompts"] for s in row})
    return out


def _reward_model(store: Store, model: dict) -> dict | None:
    """The reward model a policy was trained against, else the one its newest evaluation was judged by."""
    path = (model.get("config") or {}).get("reward_model")
    found = None
    if path:
        found = store.scalar(
            "SELECT id FROM models WHERE path = ? ORDER BY id DESC LIMIT 1", [str(Path(path).resolve())]
        )
        role = "trained against"
    if found is None:
        judged = [
            e["reward_model"]
            for e in (model.get("metrics") or {}).get("evaluations", [])
            if e.get("reward_model")
        ]
        found, role = (judged[-1], "judged by") if judged else (None, "")
    if found is None:
        return None
    rm = get_model(store, found)
    return {
        "id": rm["id"],
        "name": rm["name"],
        "status": rm["status"],
        "role": role,
        "path": rm["path"],
        "snapshot": snapshot_summary(store, rm["snapshot_id"]) if rm["snapshot_id"] else None,
    }


def describe(store: Store, model_id: int) -> dict:
    model = get_model(store, model_id)
    chain = lineage(store, model_id)
    snapshots = {
        m["snapshot_id"]: snapshot_summary(store, m["snapshot_id"]) for m in chain if m["snapshot_id"]
    }
    return {
        **model,
        "lineage": chain,
        "snapshots": list(snapshots.values()),
        "reward_model": _reward_model(store, model)
        if model["kind"] in (ModelKind.SFT, ModelKind.POLICY)
        else None,
        "evaluations": (model.get("metrics") or {}).get("evaluations", []),
    }
