"""Listwise reward training on transformers' Trainer: a collator and a `compute_loss`, nothing more.

A batch holds B rankings; their responses are flattened into one padded batch of
input ids (each response encoded once), scored by the sequence-classification head,
put back into a (B, K) grid and trained with the Plackett-Luce loss, each stage weighted
by its preference strength (reward/strength.py). With attribute heads the model has one
output more per rubric attribute (output 0 stays the reward) and the rated attributes add
their squared error (reward/losses.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Trainer

from reward.losses import attribute_loss, plackett_luce_loss
from reward.score import pad_batch
from reward.strength import RATING_MAX


class ListwiseCollator:
    def __init__(self, pad_id: int, attributes: Sequence[str] = ()):
        self.pad_id = pad_id
        self.attributes = list(attributes)

    def __call__(self, groups: list[dict]) -> dict[str, torch.Tensor]:
        k = max(len(g["ids"]) for g in groups)
        ids, attention = pad_batch([seq for g in groups for seq in g["ids"]], self.pad_id)
        ranks = torch.full((len(groups), k), k + 1, dtype=torch.long)
        mask = torch.zeros((len(groups), k), dtype=torch.bool)
        weights = torch.ones((len(groups), k))
        for b, g in enumerate(groups):
            ranks[b, : len(g["ranks"])] = torch.tensor(g["ranks"])
            mask[b, : len(g["ranks"])] = True
            weights[b, : len(g["ranks"])] = torch.tensor(g.get("weights") or [1.0] * len(g["ranks"]))
        batch = {"input_ids": ids, "attention_mask": attention, "ranks": ranks, "list_mask": mask}
        batch["stage_weights"] = weights
        if self.attributes:  # one row per response, in the flattened order
            rated = [a or {} for g in groups for a in g["attributes"]]
            # A rating not given is absent, or None once `datasets` gave every row the same keys.
            batch["ratings"] = torch.tensor(
                [[(r.get(name) or 0) / RATING_MAX for name in self.attributes] for r in rated]
            )
            batch["rated"] = torch.tensor(
                [[r.get(name) is not None for name in self.attributes] for r in rated]
            )
        return batch


class ListwiseTrainer(Trainer):
    attribute_weight = 1.0  # the attribute heads' squared error beside the ranking loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        ).logits
        scores = logits[:, 0]
        mask = inputs["list_mask"]
        grid = scores.new_zeros(mask.shape).masked_scatter(mask, scores)  # row-major, as flattened
        loss = plackett_luce_loss(grid, inputs["ranks"], mask, inputs.get("stage_weights"))
        if "ratings" in inputs:
            loss = loss + self.attribute_weight * attribute_loss(
                logits[:, 1:], inputs["ratings"].to(logits.dtype), inputs["rated"]
            )
        return (loss, grid) if return_outputs else loss
