"""The promotion gate: a newly trained reward model becomes active only if it is at least as good.

The verdict is reached before the model is registered (see `service.jobs.runner`). With an
active reward model, both are evaluated on the same prompts: those held out by the
candidate's snapshot *and* by the active model's (split_of is a threshold on a hash of
the prompt, so that is the smaller eval fraction), so neither is scored on prompts it
trained on. The candidate passes when its held-out pairwise accuracy there is at least
the active model's; with no active model, when its own held-out accuracy is at least
`min_accuracy`. The reason, and the side-by-side numbers, are kept.
`rankloop models promote ID --reason ...` overrides the gate, with the reason recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reward.evaluate import evaluate
from reward.snapshot_format import read_manifest
from service.core.enums import ModelKind
from service.core.registry import active_model
from service.core.store import Store


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    compared_to_active: dict | None = None


def _eval_fraction(snapshot_path: Path) -> float:
    manifest = read_manifest(snapshot_path)
    if manifest is None:
        raise ValueError(
            f"the snapshot {snapshot_path} has no manifest; take it again with `rankloop snapshot`"
        )
    return manifest["filters"]["eval_fraction"]


def reward_verdict(
    store: Store, model_dir: Path, metrics: dict, snapshot: Path, min_accuracy: float
) -> Verdict:
    acc = (metrics.get("eval") or {}).get("pairwise_accuracy")
    if acc is None:
        return Verdict(False, "it has no held-out accuracy (its eval split has no strict pairs)")
    active = active_model(store, ModelKind.REWARD)
    if active is None:
        ok = acc >= min_accuracy
        return Verdict(
            ok,
            f"first reward model: held-out accuracy {acc:.4f} {'>=' if ok else '<'} "
            f"the minimum {min_accuracy:.4f}",
        )
    theirs_snapshot = store.scalar("SELECT filters FROM snapshots WHERE id = ?", [active["snapshot_id"]])
    common = min(
        _eval_fraction(snapshot), json.loads(theirs_snapshot)["eval_fraction"] if theirs_snapshot else 1.0
    )
    try:
        mine = evaluate(model_dir, snapshot, "eval", held_out_at=common)
        theirs = evaluate(active["path"], snapshot, "eval", held_out_at=common)
    except ValueError:  # no prompt is held out by both snapshots
        return Verdict(
            False,
            f"no prompt is held out by both its snapshot and active #{active['id']}'s, "
            "so they cannot be compared; promote by hand if it is better",
        )
    compared = {"model_id": active["id"], "held_out_at": common, "candidate": mine, "active": theirs}
    a, b = mine["pairwise_accuracy"], theirs["pairwise_accuracy"]
    if a is None or b is None:
        return Verdict(
            False, "the prompts both snapshots hold out have no strict pairs to compare on", compared
        )
    ok = a >= b
    return Verdict(
        ok,
        f"held-out accuracy {a:.4f} {'>=' if ok else '<'} active #{active['id']}'s {b:.4f} "
        f"on the {mine['pairs']} pairs both snapshots hold out",
        compared,
    )
