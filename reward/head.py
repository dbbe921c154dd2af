"""A reward head on a frozen backbone: the recipe that fits a CPU (`frozen_backbone: yes`, or `auto`
without a GPU).

The sequence-classification model scores a response by a linear head on the final (normed) hidden state
of its last token. With the backbone frozen, the states are computed once per distinct response (one
forward pass, no backward, sequences batched by length), and the head is a Bradley-Terry logistic
regression on the differences chosen - rejected, fit by L-BFGS with an L2 penalty. The state it reads
need not be the top layer's: a middle-to-late layer often separates preferences better (on HH harmless
pairs with SmolLM2, cross-validation picked layer 18 of 30: bench/reward_hh.json), so the forward pass
keeps the last-token state at a few depths (normed as the model's final norm would), and the depth and
the penalty are both chosen by cross-validation over the training prompts (never on held-out data).
The checkpoint keeps the layers up to the chosen depth and puts the head's weights into its `score`
layer, so it is an ordinary, shallower Hugging Face checkpoint that `reward.score`, the service and TRL
load as they load any reward model, and that scores faster.

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

# The penalty on |w|^2, relative to the mean loss over pairs; cross-validation picks one. Where pairs
# are few against the hidden size (1,341 HH pairs, 576 features) only the strong end holds.
L2_CHOICES = (1.0, 10.0, 100.0, 1000.0, 10000.0)
DEPTHS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # shares of the layers whose last-token state may be read
FOLDS = 5  # cross-validation over the training prompts


def candidate_layers(model: Any) -> list[int]:
    """The depths the head may read: a few from the middle to the top, for a decoder whose layers and
    final norm are where Llama-like models keep them (the top only for any other)."""
    n = model.config.num_hidden_layers
    base = model.base_model
    if not isinstance(getattr(base, "layers", None), torch.nn.ModuleList) or not hasattr(base, "norm"):
        return [n]
    return sorted({max(1, round(n * d)) for d in DEPTHS})


@torch.inference_mode()
def last_token_states(
    model: Any, sequences: list[list[int]], pad_id: int, batch_size: int, layers: list[int] | None = None
) -> torch.Tensor:
    """[sequence, layer, hidden]: the state at each sequence's last token after each of `layers` (the
    last layer only by default), normed as the model's final norm would, in the order given. A
    sequence that recurs (an answer in several pairs: a ranking of K gives K(K-1)/2) is read once."""
    n = model.config.num_hidden_layers
    layers = layers or [n]
    sequences, where = distinct(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
    out = torch.empty(len(sequences), len(layers), model.config.hidden_size)
    backbone = model.base_model
    for at in tqdm(range(0, len(order), batch_size), desc="frozen backbone", unit="batch"):
        idx = order[at : at + batch_size]
        ids, mask = pad_batch([sequences[i] for i in idx], pad_id)
        hidden = backbone(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        # The token the classification head reads: the last one that is not padding (as transformers finds it).
        last = ((ids != pad_id).long() * torch.arange(ids.shape[1])).argmax(-1)
        for j, layer in enumerate(layers):  # hidden_states[n] is already normed; the others are not
            state = hidden[layer][torch.arange(len(idx)), last]
            out[idx, j] = (state if layer == n else backbone.norm(state)).float()
    return out[where]


def keep_layers(model: Any, layers: int) -> None:
    """Drop the decoder layers above `layers`: the model's last hidden state is then that layer's."""
    if layers >= model.config.num_hidden_layers:
        return
    model.base_model.layers = model.base_model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]


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


def cross_validate(diffs: torch.Tensor, prompts: list[str], layers: list[int], seed: int) -> dict:
    """{layer: {l2: accuracy}} over FOLDS folds of the training prompts (no prompt on both sides of
    a fold); empty when there are too few prompts to hold any out."""
    order = sorted(set(prompts))
    random.Random(seed).shuffle(order)
    fold_of = {q: i % FOLDS for i, q in enumerate(order)}
    fold = torch.tensor([fold_of[q] for q in prompts])
    folds = [f for f in range(FOLDS) if 0 < int((fold == f).sum()) < len(prompts)]
    if not folds:
        return {}
    held = sum(int((fold == f).sum()) for f in folds)
    return {
        str(layer): {
            str(c): sum(
                accuracy(diffs[fold == f, j], bradley_terry(diffs[fold != f, j], c)) * int((fold == f).sum())
                for f in folds
            )
            / held
            for c in L2_CHOICES
        }
        for j, layer in enumerate(layers)
    }


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
    layers = candidate_layers(model)
    states = last_token_states(model, seqs, tokenizer.pad_token_id, cfg.batch_size, layers)
    scale = states.std(0) + 1e-6  # standardized per layer, so one L2 suits every feature
    diffs = (states[0::2] - states[1::2]) / scale  # [pair, layer, hidden]
    val = cross_validate(diffs, [str(p["prompt"]) for p in pairs], layers, cfg.seed)
    # The best depth and penalty; ties go to the stronger penalty, then the deeper layer.
    j, l2 = (
        max(
            ((j, c) for j in range(len(layers)) for c in L2_CHOICES),
            key=lambda jc: (val.get(str(layers[jc[0]]), {}).get(str(jc[1]), 0.0), jc[1], jc[0]),
        )
        if val
        else (len(layers) - 1, 100.0)
    )
    history: list[dict] = []
    w = bradley_terry(diffs[:, j], l2, history)
    keep_layers(model, layers[j])
    with torch.no_grad():
        model.score.weight.copy_((w / scale[j]).unsqueeze(0).to(model.score.weight.dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    seconds = time.perf_counter() - t0
    history[-1].update(
        {
            "epoch": 1.0,
            "layer": layers[j],
            "l2": l2,
            "validation_accuracy": val,  # {layer: {l2: cross-validated accuracy}}
            "train_accuracy": accuracy(diffs[:, j], w),
        }
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
