"""From rankings to training signal: a ranking of K responses with ties becomes pairs or lists.

Pure functions over plain rows of a snapshot (`reward.snapshot_format`); no database.

* `strict_pairs(ranks)`: every pair a ranking orders strictly (ties give none).
* `pairwise_rows(...)`: those pairs in the conversational format TRL's `RewardTrainer`
  reads (`prompt` / `chosen` / `rejected`), with a `margin`: the rank gap if asked, plus the
  annotator's preference strength between the two (reward/strength.py) where the ranking gives one.
* `listwise_groups(...)`: one group per ranking (all K responses, their ranks, each stage's
  weight from the strengths, and the attribute ratings), for the Plackett-Luce loss, which scores
  each response once.
* `consensus` other than `"all"` (which keeps each ranking as its own data) first merges the rankings
  of one task (by several annotators) into one: by mean rank (`aggregate`, `borda`), Bradley-Terry,
  Plackett-Luce or ranked pairs (reward/aggregate.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from reward.aggregate import METHODS, merge
from reward.conversation import Messages, from_row, split_key
from reward.snapshot_format import snapshot_file
from reward.strength import pair_margin, stage_weights

Consensus = Literal["all", "aggregate", "borda", "bradley-terry", "plackett-luce", "ranked-pairs"]


def strict_pairs(ranks: list[int]) -> list[tuple[int, int, int]]:
    """(better, worse, rank gap) for every pair of positions the ranking orders strictly; ties give none."""
    return [
        (i, j, ranks[j] - ranks[i])
        for i in range(len(ranks))
        for j in range(len(ranks))
        if ranks[i] < ranks[j]
    ]


def split_of(prompt: str, eval_fraction: float) -> str:
    """train or eval, from the prompt's text alone: stable as data grows, and the same prompt, every
    near-duplicate of it and every conversation with its opening (`split_key`) land on one side. A
    prompt held out at fraction f is held out at every f' >= f."""
    bucket = int(hashlib.sha256(split_key(prompt).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < eval_fraction else "train"


def read_snapshot(path: str | Path, split: str | None = None, held_out_at: float | None = None) -> list[dict]:
    """Rows of a snapshot (a Parquet file, or the directory holding it), optionally one split;
    `held_out_at=f` keeps only prompts that a snapshot with eval fraction f would also hold out."""
    import pyarrow.parquet as pq

    rows = pq.read_table(snapshot_file(path)).to_pylist()
    return [
        r
        for r in rows
        if (split is None or r["split"] == split)
        and (held_out_at is None or split_of(r["prompt"], held_out_at) == "eval")
    ]


def apply_consensus(rows: list[dict], consensus: Consensus) -> list[dict]:
    """`all`: rows as they are. Otherwise one row per task, its ranks the merge of its rankings by
    that method (reward/aggregate.py; `aggregate` is the mean rank, Borda)."""
    if consensus == "all":
        return rows
    method = "borda" if consensus == "aggregate" else consensus
    if method not in METHODS:
        raise ValueError(
            f"consensus must be 'all', 'aggregate' or one of {', '.join(METHODS)}; got {consensus!r}"
        )
    by_task: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task_id"]].append(r)
    merged = []
    for task_rows in by_task.values():
        merged.append(
            {
                **task_rows[0],
                "ranks": merge([r["ranks"] for r in task_rows], method),
                "annotator": "(consensus)",
                "n_rankings": len(task_rows),
                "strengths": None,  # the annotators' strengths were of their own orders, not the merged one
                "attributes": None,
            }
        )
    return merged


def conversation(row: dict) -> Messages:
    """What annotators judged a response against: the conversation so far (system prompts stay
    hidden). Snapshots carry it as `messages`; rows without it have the one-message `prompt`."""
    return from_row(row["prompt"], row.get("messages"))


def pairwise_rows(
    rows: list[dict], margin: bool = False, consensus: Consensus = "all", strength_margin: bool = True
) -> list[dict]:
    """Every strict pair, as TRL's conversational preference rows, with `margin` (every row or none):
    the rank gap if `margin`, plus the strength margin between the pair if `strength_margin` and any
    ranking gives strengths (0 for rankings without)."""
    merged = apply_consensus(rows, consensus)
    strengths = strength_margin and any(r.get("strengths") for r in merged)
    out = []
    for r in merged:
        for better, worse, gap in strict_pairs(r["ranks"]):
            row: dict[str, Any] = {
                "prompt": conversation(r),
                "chosen": [{"role": "assistant", "content": r["texts"][better]}],
                "rejected": [{"role": "assistant", "content": r["texts"][worse]}],
            }
            if margin or strengths:
                row["margin"] = (float(gap) if margin else 0.0) + (
                    pair_margin(r.get("strengths"), r["ranks"][better], r["ranks"][worse])
                    if strengths
                    else 0.0
                )
            out.append(row)
    return out


def listwise_groups(rows: list[dict], consensus: Consensus = "all") -> list[dict]:
    """One group per ranking: the prompt, its K responses in display order, their ranks, each
    response's stage weight (1 without strengths) and attribute ratings (a dict per response)."""
    return [
        {
            "prompt": conversation(r),
            "responses": list(r["texts"]),
            "ranks": list(r["ranks"]),
            "weights": stage_weights(list(r["ranks"]), r.get("strengths")),
            "attributes": json.loads(r["attributes"]) if r.get("attributes") else [{} for _ in r["ranks"]],
        }
        for r in apply_consensus(rows, consensus)
    ]
