"""A reward head on a frozen backbone: the recipe that fits a CPU (`frozen_backbone: true`).

The sequence-classification model scores a response by a linear head on the final (normed) hidden state
of its last token. With the backbone frozen, that state is computed once per response (one forward pass,
no backward, sequences batched by length), and the head is a Bradley-Terry logistic regression on the
differences chosen - rejected, fit by L-BFGS with an L2 penalty chosen on a validation split of the
training prompts (never on held-out data). The head's weights go into the model's `score` layer, so the
result is an ordinary Hugging Face checkpoint that `reward.score`, the service and TRL load as they
load any reward model.

bench/reward_hh.py measures it on Anthropic HH harmless pairs with SmolLM2-135M-Instruct on 2 cores.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from reward.config import RewardTrainConfig
from reward.data import pairwise_rows
from reward.scaffold import Fit
from reward.score import distinct, encode, pad_batch

# The penalty on |w|^2, relative to the mean loss over pairs; the validation split picks one. Where
# pairs are few against the hidden size (1,341 HH pairs, 576 features) only the strong end holds.
L2_CHOICES = (0.1, 1.0, 10.0, 100.0, 1000.0)
VALIDATION_FRACTION = 0.2


@torch.inference_mode()
def last_token_states(model: Any, sequences: list[list[int]], pad_id: int, batch_size: int) -> torch.Tensor:
    """The backbone's final hidden state at each sequence's last token, in the order given. A sequence
    that recurs (an answer in several pairs: a ranking of K gives K(K-1)/2) is read once."""
    sequences, where = distinct(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
    out = torch.empty(len(sequences), model.config.hidden_size)
    backbone = model.base_model
    for at in tqdm(range(0, len(order), batch_size), desc="frozen backbone", unit="batch"):
        idx = order[at : at + batch_size]
        ids, mask = pad_batch([sequences[i] for i in idx], pad_id)
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        # The token the classification head reads: the last one that is not padding (as transformers finds it).
        last = ((ids != pad_id).long() * torch.arange(ids.shape[1])).argmax(-1)
        out[idx] = hidden[torch.arange(len(idx)), last].float()
    return out[where]


def bradley_terry(diffs: torch.Tensor, l2: float, history: list[dict] | None = None) -> torch.Tensor:
    """Weights w minimizing mean softplus(-diffs @ w) + l2 * |w|^2 / n (the logistic loss of 'chosen wins')."""
    w = torch.zeros(diffs.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-diffs @ w).mean() + l2 * (w * w).sum() / len(diffs)
        loss.backward()
        if history is not None:
            history.append({"step": len(history) + 1, "loss": round(loss.item(), 6)})
        return loss

    opt.step(closure)
    return w.detach()


def accuracy(diffs: torch.Tensor, w: torch.Tensor) -> float:
    return float(((diffs @ w) > 0).float().mean()) if len(diffs) else 0.0


def fit_head(
    cfg: RewardTrainConfig, train_rows: list[dict], tokenizer: PreTrainedTokenizerBase, out: Path
) -> Fit:
    """Fit the head on the snapshot's training rankings (every strict pair), save the checkpoint to `out`."""
    t0 = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(cfg.base_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    pairs = pairwise_rows(train_rows, consensus=cfg.consensus)
    if not pairs:
        raise ValueError("the snapshot's training rankings hold no strict pair to learn from")
    seqs = [
        encode(tokenizer, p["prompt"], side[0]["content"], cfg.max_length)
        for p in pairs
        for side in (p["chosen"], p["rejected"])
    ]
    states = last_token_states(model, seqs, tokenizer.pad_token_id, cfg.batch_size)
    scale = states.std(0) + 1e-6  # standardized, so one L2 suits every feature
    diffs = (states[0::2] - states[1::2]) / scale
    # Validation split by conversation: no prompt on both sides.
    prompts = sorted({str(p["prompt"]) for p in pairs})
    random.Random(cfg.seed).shuffle(prompts)
    held = set(prompts[: int(len(prompts) * VALIDATION_FRACTION)])
    is_val = torch.tensor([str(p["prompt"]) in held for p in pairs])
    l2, val = L2_CHOICES[len(L2_CHOICES) // 2], {}
    if 0 < int(is_val.sum()) < len(pairs):
        val = {c: accuracy(diffs[is_val], bradley_terry(diffs[~is_val], c)) for c in L2_CHOICES}
        l2 = max(L2_CHOICES, key=lambda c: (val[c], c))  # ties: the stronger penalty
    history: list[dict] = []
    w = bradley_terry(diffs, l2, history)
    with torch.no_grad():
        model.score.weight.copy_((w / scale).unsqueeze(0).to(model.score.weight.dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    seconds = time.perf_counter() - t0
    history[-1].update(
        {"epoch": 1.0, "l2": l2, "validation_accuracy": val, "train_accuracy": accuracy(diffs, w)}
    )
    return Fit(
        steps=len(history),
        seconds=round(seconds, 3),
        samples_per_s=len(pairs) / seconds if seconds else None,
        history=history,
        parameters_changed=1,
        parameters_trained=1,
        processes=1,
    )
