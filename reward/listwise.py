"""Listwise reward training on transformers' Trainer: a collator and a `compute_loss`, nothing more.

A batch holds B rankings; their responses are flattened into one padded batch of
input ids (each response encoded once), scored by the sequence-classification head,
put back into a (B, K) grid and trained with the Plackett-Luce loss.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from reward.losses import plackett_luce_loss
from reward.score import pad_batch


class ListwiseCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups: list[dict]) -> dict[str, torch.Tensor]:
        k = max(len(g["ids"]) for g in groups)
        ids, attention = pad_batch([seq for g in groups for seq in g["ids"]], self.pad_id)
        ranks = torch.full((len(groups), k), k + 1, dtype=torch.long)
        mask = torch.zeros((len(groups), k), dtype=torch.bool)
        for b, g in enumerate(groups):
            ranks[b, : len(g["ranks"])] = torch.tensor(g["ranks"])
            mask[b, : len(g["ranks"])] = True
        return {"input_ids": ids, "attention_mask": attention, "ranks": ranks, "list_mask": mask}


class ListwiseTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
        ).logits.squeeze(-1)
        mask = inputs["list_mask"]
        grid = scores.new_zeros(mask.shape).masked_scatter(mask, scores)  # row-major, as flattened
        loss = plackett_luce_loss(grid, inputs["ranks"], mask)
        return (loss, grid) if return_outputs else loss
