"""Train a reward model from a snapshot: a sequence-classification head on a pretrained or
fine-tuned checkpoint, full or LoRA.

* `pairwise`: every strict pair of every ranking through TRL's `RewardTrainer`
  (Bradley-Terry, optionally with the rank gap as margin).
* `listwise`: each ranking's K responses scored once per step and trained with the
  Plackett-Luce loss (ties: Breslow; see `reward/losses.py`), via a `compute_loss` on
  transformers' `Trainer`. At K = 4 that is 4 forward passes per ranking instead of 12.

Writes a Hugging Face directory (LoRA is merged in, so it loads as is), `metrics.json`
(loss curve, held-out metrics, throughput) and a model card naming the base
checkpoint and the snapshot. The config is `reward.config.RewardTrainConfig`; the run around
the trainer (seed, progress, LoRA merge, save, outputs) is `reward.scaffold`'s. Runs unchanged under `accelerate launch` with several
processes (each takes its share of every batch; rank 0 writes the outputs).

    python -m reward.train --config reward.yaml
    accelerate launch --multi_gpu --num_processes 2 -m reward.train --config reward.yaml

(accelerate's `--cpu` launcher needs MPI for several processes; `--multi_gpu` starts them
with torchrun, which on a machine without GPUs trains over gloo on the CPU.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase, Trainer
from trl import RewardConfig, RewardTrainer

from reward.config import RewardTrainConfig
from reward.configfile import parse_cli
from reward.data import listwise_groups, pairwise_rows, read_snapshot
from reward.evaluate import evaluate
from reward.head import fit_head
from reward.listwise import ListwiseCollator, ListwiseTrainer
from reward.objectives import objective_rows
from reward.scaffold import fit, lora_config, model_card, training_kind, trl_args, write_outputs
from reward.score import encode, ensure_pad_token
from reward.snapshot_format import snapshot_id


def reward_args(cfg: RewardTrainConfig, workdir: Path) -> RewardConfig:
    """TRL's RewardConfig (both modes run on it): the shared mapping plus the reward model's own."""
    return trl_args(
        cfg,
        RewardConfig,
        workdir,
        max_length=cfg.max_length,
        remove_unused_columns=cfg.mode == "pairwise",  # listwise: the collator needs every column
    )


def _build_pairwise(
    cfg: RewardTrainConfig, train_rows: list[dict], tokenizer: PreTrainedTokenizerBase, args: RewardConfig
) -> Trainer:
    rows = []
    for p in pairwise_rows(
        train_rows, margin=cfg.margin, consensus=cfg.consensus, strength_margin=cfg.strength_margin
    ):
        prompt = p["prompt"]  # the whole conversation
        row: dict[str, Any] = {
            "chosen_ids": encode(tokenizer, prompt, p["chosen"][0]["content"], cfg.max_length),
            "rejected_ids": encode(tokenizer, prompt, p["rejected"][0]["content"], cfg.max_length),
        }
        if "margin" in p:
            row["margin"] = p["margin"]
        rows.append(row)
    return RewardTrainer(
        model=str(cfg.base_model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(cfg, "SEQ_CLS"),
    )


def _build_listwise(
    cfg: RewardTrainConfig, train_rows: list[dict], tokenizer: PreTrainedTokenizerBase, args: RewardConfig
) -> Trainer:
    groups = [
        {
            "ids": [encode(tokenizer, g["prompt"], t, cfg.max_length) for t in g["responses"]],
            "ranks": g["ranks"],
            "weights": g["weights"] if cfg.strength_margin else None,
            "attributes": g["attributes"],
        }
        for g in listwise_groups(train_rows, cfg.consensus)
    ]
    heads = ["reward", *cfg.attribute_heads]  # output 0 is the reward; the rest predict ratings / 4
    model = AutoModelForSequenceClassification.from_pretrained(
        cfg.base_model,
        num_labels=len(heads),
        id2label=dict(enumerate(heads)),
        label2id={h: i for i, h in enumerate(heads)},
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = lora_config(cfg, "SEQ_CLS")
    trainer = ListwiseTrainer(
        model=get_peft_model(model, lora) if lora else model,
        args=args,
        train_dataset=Dataset.from_list(groups),
        data_collator=ListwiseCollator(tokenizer.pad_token_id, cfg.attribute_heads),
        processing_class=tokenizer,
    )
    trainer.attribute_weight = cfg.attribute_weight
    return trainer


def resolve_backbone(cfg: RewardTrainConfig) -> RewardTrainConfig:
    """`frozen_backbone: auto` made yes or no where the training runs: the head alone where no GPU is
    seen (the recipe that fits a CPU), the whole model where one is. What ran is what metrics.json records."""
    if cfg.frozen_backbone != "auto":
        return cfg
    return cfg.model_copy(update={"frozen_backbone": "no" if torch.cuda.is_available() else "yes"})


def main(cfg: RewardTrainConfig) -> Path:
    """Train, save, evaluate on the snapshot's eval split, and write metrics.json and the model card."""
    cfg = resolve_backbone(cfg)
    head_only = cfg.frozen_backbone == "yes"
    if head_only and int(os.environ.get("RANK", "0")) != 0:
        # Under `accelerate launch` with several processes the head is fit once, by the main process
        # (a few forward passes and an L-BFGS fit): the others would write the same files beside it.
        return Path(cfg.output_dir)
    train_rows = objective_rows(read_snapshot(cfg.snapshot, "train"), cfg.objective, cfg.harmless_batches)
    if not train_rows:
        raise ValueError(
            f"the snapshot {cfg.snapshot} has no training rankings"
            + (
                f" for the objective {cfg.objective} (harmlessness reads the batches "
                f"{', '.join(cfg.harmless_batches)}, unsafe flags and harmlessness ratings)"
                if cfg.objective != "overall"
                else ""
            )
        )
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    ensure_pad_token(tokenizer)
    out = Path(cfg.output_dir)
    build = _build_pairwise if cfg.mode == "pairwise" else _build_listwise
    done = (
        fit_head(cfg, train_rows, tokenizer, out)
        if head_only
        else fit(
            cfg, lambda workdir: build(cfg, train_rows, tokenizer, reward_args(cfg, workdir)), tokenizer, out
        )
    )
    if done is None:  # not the main process
        return out
    epochs_run = done.epochs or cfg.epochs
    metrics = {
        "kind": "reward",
        "mode": "head on a frozen backbone" if head_only else cfg.mode,
        "objective": cfg.objective,
        "base_model": str(cfg.base_model),
        "snapshot": snapshot_id(cfg.snapshot),
        "loss_curve": done.loss_curve,
        "train": {
            "rankings": len(train_rows),
            **done.train_metrics(),
            "epochs": epochs_run,
            "rankings_per_s": len(train_rows) * epochs_run / done.seconds if done.seconds else None,
            **({"head": done.history[-1]} if head_only else {}),  # the L2 chosen, accuracies
        },
        "eval": evaluate(  # read as it learned, on the held-out rankings of its objective
            out,
            cfg.snapshot,
            "eval",
            max_length=cfg.max_length,
            objective=cfg.objective,
            harmless_batches=cfg.harmless_batches,
        ),
        "config": cfg.model_dump(mode="json"),
    }
    return write_outputs(out, metrics, reward_card(cfg, metrics))


def reward_card(cfg: RewardTrainConfig, metrics: dict) -> str:
    ev = metrics["eval"]
    hidden = ev.get("hidden", {})
    facts = [
        f"base checkpoint: `{cfg.base_model}`",
        f"objective: {cfg.objective}",
        f"snapshot: `{metrics['snapshot']}` ({cfg.snapshot})",
        f"training: {metrics['train']['rankings']} rankings, {metrics['train']['steps']} steps, "
        f"{'the head alone, on a frozen backbone' if cfg.frozen_backbone == 'yes' else training_kind(cfg)}, "
        f"consensus `{cfg.consensus}`",
        f"held-out pairwise accuracy: {ev['pairwise_accuracy']} on {ev['pairs']} pairs; ECE {ev['ece']}",
    ]
    if hidden:
        facts.append(
            f"agreement with the simulated annotators' hidden preference: {hidden.get('model_vs_hidden')} "
            f"(the labels themselves: {hidden.get('labels_vs_hidden')})"
        )
    kind = "head on a frozen backbone" if cfg.frozen_backbone == "yes" else cfg.mode
    return model_card(f"rankloop reward model ({kind})", facts, cfg)


if __name__ == "__main__":
    print(main(parse_cli(RewardTrainConfig, None, __doc__)))
