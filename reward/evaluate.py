"""Held-out evaluation of a reward model on a snapshot split.

* `pairwise_accuracy`: share of the rankings' strict pairs the model orders the same way.
* `by_agreement`: the same, by how much the task's annotators agreed with each other
  (`single` = one ranking; `high` >= 0.8 mean pairwise agreement, `medium` >= 0.5, `low`).
* `by_system_prompt`: the same over the pairs that involve each system prompt.
* `ece`: expected calibration error of P(i before j) = sigmoid(s_i - s_j) over 10 bins
  (pairs taken in display order, so probabilities fall on both sides of 0.5).
* `hidden`: for rankings by simulated annotators, the model's agreement with their
  hidden utility on every pair, and the noise ceiling: how often the labels themselves
  agree with it (`labels_vs_hidden`, measured; `expected_label_agreement`, the
  simulation's sigmoid(|du| / noise)).

    python -m reward.evaluate --model models/reward-3 --snapshot data/snapshots/ID [--against models/reward-1]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from reward.data import read_snapshot, strict_pairs
from reward.objectives import HARMLESS_BATCHES, Objective, objective_rows

BINS = 10


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(min(x, 60), -60)))


def _acc(hits: list[float]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def _hit(better: float, worse: float) -> float:
    return 1.0 if better > worse else 0.5 if better == worse else 0.0


def agreement_level(task_agreement: float | None) -> str:
    """The bucket of a task by how much its annotators agreed (the snapshot computes the agreement)."""
    if task_agreement is None:
        return "single"
    return "high" if task_agreement >= 0.8 else "medium" if task_agreement >= 0.5 else "low"


def ece(probs: list[float], labels: list[int]) -> float | None:
    if not probs:
        return None
    bins: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for p, y in zip(probs, labels, strict=True):
        bins[min(int(p * BINS), BINS - 1)].append((p, y))
    total = len(probs)
    return round(
        sum(
            len(b) / total * abs(sum(y for _, y in b) / len(b) - sum(p for p, _ in b) / len(b))
            for b in bins.values()
        ),
        4,
    )


def metrics(rows: list[dict], scores: list[list[float]]) -> dict:
    """Every metric above, from snapshot rows and the model's score of each candidate."""
    hits, by_level, by_sp = [], defaultdict(list), defaultdict(list)
    probs, labels = [], []
    model_hidden, label_hidden, expected = [], [], []
    for r, s in zip(rows, scores, strict=True):
        for better, worse, _ in strict_pairs(r["ranks"]):
            h = _hit(s[better], s[worse])
            hits.append(h)
            by_level[agreement_level(r.get("task_agreement"))].append(h)
            for sp in {r["system_prompts"][better], r["system_prompts"][worse]}:
                by_sp[sp].append(h)
        for i, j in combinations(range(len(s)), 2):
            if r["ranks"][i] != r["ranks"][j]:
                probs.append(_sigmoid(s[i] - s[j]))
                labels.append(int(r["ranks"][i] < r["ranks"][j]))
        u = r.get("hidden_utility")
        if u:
            noise = (
                json.loads(r["annotator_profile"]).get("noise", 1.0) if r.get("annotator_profile") else 1.0
            )
            for i, j in combinations(range(len(u)), 2):
                if u[i] == u[j]:
                    continue
                hi, lo = (i, j) if u[i] > u[j] else (j, i)
                model_hidden.append(_hit(s[hi], s[lo]))
                expected.append(_sigmoid(abs(u[i] - u[j]) / noise))
                if r["ranks"][i] != r["ranks"][j]:
                    label_hidden.append(float(r["ranks"][hi] < r["ranks"][lo]))
    out: dict[str, Any] = {
        "rankings": len(rows),
        "pairs": len(hits),
        "pairwise_accuracy": _acc(hits),
        "by_agreement": {k: {"pairs": len(v), "accuracy": _acc(v)} for k, v in sorted(by_level.items())},
        "by_system_prompt": {k: {"pairs": len(v), "accuracy": _acc(v)} for k, v in sorted(by_sp.items())},
        "ece": ece(probs, labels),
    }
    if model_hidden:
        out["hidden"] = {
            "pairs": len(model_hidden),
            "model_vs_hidden": _acc(model_hidden),
            "labels_vs_hidden": _acc(label_hidden),
            "expected_label_agreement": _acc(expected),
        }
    return out


def evaluate(
    model_dir: str | Path,
    snapshot: str | Path,
    split: str = "eval",
    held_out_at: float | None = None,
    max_length: int | None = None,
    objective: Objective = "overall",
    harmless_batches: Sequence[str] = HARMLESS_BATCHES,
) -> dict:
    """Metrics of a model on a snapshot split (`held_out_at`: only prompts held out at that fraction too),
    reading inputs cut as in training (`max_length`, else the model's own), on the rankings of one
    objective (reward/objectives.py)."""
    from reward.score import RewardScorer

    rows = objective_rows(read_snapshot(snapshot, split, held_out_at), objective, tuple(harmless_batches))
    if not rows:
        raise ValueError(
            f"the snapshot's {split!r} split is empty; take a snapshot with more prompts "
            "or a larger eval_fraction"
        )
    return metrics(rows, RewardScorer(model_dir, max_length=max_length).score_rankings(rows))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="reward model directory")
    ap.add_argument("--snapshot", required=True, type=Path, help="snapshot directory or Parquet file")
    ap.add_argument("--split", default="eval", choices=["train", "eval"])
    ap.add_argument("--against", type=Path, help="another reward model, evaluated side by side")
    args = ap.parse_args(argv)
    result = {"model": evaluate(args.model, args.snapshot, args.split)}
    if args.against:
        result["against"] = evaluate(args.against, args.snapshot, args.split)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
