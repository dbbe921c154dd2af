"""The promotion gate: a newly trained reward model becomes active only if it is at least as good.

A trained model is registered as `candidate`. It becomes `active` when its held-out
pairwise accuracy is at least the active model's on the *same* split (the active one
is re-evaluated on the candidate's snapshot, so both face the same data), or, when no
reward model is active yet, at least `min_accuracy`. Either way the registry records
why, and the side-by-side numbers go into the candidate's metrics.
`rankloop models promote ID --reason ...` overrides the gate, with the reason recorded.
"""

from __future__ import annotations

from pathlib import Path

from service.registry import active_model, get_model, promote, set_status, update_metrics
from service.store import Store


def gate_reward(store: Store, candidate_id: int, snapshot: Path, min_accuracy: float = 0.55) -> tuple[bool, str]:
    from reward.evaluate import evaluate

    cand = get_model(store, candidate_id)
    acc = (cand["metrics"].get("eval") or {}).get("pairwise_accuracy")
    if acc is None:
        reason = "no held-out accuracy in its metrics, so it cannot pass the gate"
        set_status(store, candidate_id, "candidate", reason)
        return False, reason
    active = active_model(store, "reward")
    if active is None:
        ok = acc >= min_accuracy
        reason = (f"first reward model: held-out accuracy {acc:.4f} {'>=' if ok else '<'} "
                  f"the minimum {min_accuracy:.4f}")
    else:
        theirs = evaluate(active["path"], snapshot, "eval")
        update_metrics(store, candidate_id, {**cand["metrics"], "compared_to_active": {
            "model_id": active["id"], "eval": theirs}})
        ok = acc >= theirs["pairwise_accuracy"]
        reason = (f"held-out accuracy {acc:.4f} {'>=' if ok else '<'} active #{active['id']}'s "
                  f"{theirs['pairwise_accuracy']:.4f} on snapshot {cand['snapshot_id']}")
    if ok:
        promote(store, candidate_id, "gate passed: " + reason)
    else:
        set_status(store, candidate_id, "candidate", "gate refused: " + reason)
    return ok, reason
