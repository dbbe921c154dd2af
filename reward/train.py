"""Train a reward model from a snapshot: a sequence-classification head on a pretrained or
fine-tuned checkpoint, full or LoRA.

* `pairwise`: every strict pair of every ranking through TRL's `RewardTrainer`
  (Bradley-Terry, optionally with the rank gap as margin).
* `listwise`: each ranking's K responses scored once per step and trained with the
  Plackett-Luce loss (ties: Breslow; see `reward/losses.py`), via a `compute_loss` on
  transformers' `Trainer`. At K = 4 that is 4 forward passes per ranking instead of 12.

Writes a Hugging Face directory (LoRA is merged in, so it loads as is), `metrics.json`
(loss curve, held-out metrics, throughput) and a model card naming the base
checkpoint and the snapshot. Runs unchanged under `accelerate launch` with several
processes (each takes its share of every batch; rank 0 writes the outputs).

    python -m reward.train --config reward.yaml
    accelerate launch --multi_gpu --num_processes 2 -m reward.train --config reward.yaml

(accelerate's `--cpu` launcher needs MPI for several processes; `--multi_gpu` starts them
with torchrun, which on a machine without GPUs trains over gloo on the CPU.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from reward.configfile import parse_cli
from reward.snapshot_format import read_manifest


class TrainingFields(BaseModel):
    """Fields every rankloop trainer has (reward here, policies in `policy/trainer.py`)."""

    lora: bool = Field(False, description="train LoRA adapters instead of every weight (merged when saved)")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    epochs: float = Field(3.0, gt=0, description="passes over the training data")
    max_steps: int = Field(-1, description="stop after this many steps (-1: run the epochs)")
    max_seconds: float | None = Field(None, gt=0, description="stop training after this much wall time")
    learning_rate: float = Field(5e-4, gt=0, description="peak learning rate")
    batch_size: int = Field(8, ge=1, description="examples per step and process")
    max_length: int = Field(512, ge=8, description="longest prompt + response, in tokens")
    logging_steps: int = Field(10, ge=1, description="log the loss every this many steps")
    bf16: bool | None = Field(
        None,
        description="bf16 mixed precision (default: on GPUs that support it; "
        "off on CPU, where it is emulated and slow)",
    )
    gradient_checkpointing: bool = Field(
        False, description="trade compute for memory (large models on small GPUs)"
    )
    seed: int = Field(0, description="random seed")
    progress_file: Path | None = Field(None, description="JSON progress for `rankloop train` (step, total)")


class RewardTrainConfig(TrainingFields):
    snapshot: Path = Field(description="snapshot directory or its rankings.parquet")
    base_model: Path = Field(description="Hugging Face checkpoint the reward head goes on")
    output_dir: Path = Field(description="where the reward model is written")
    mode: Literal["listwise", "pairwise"] = Field("listwise", description="Plackett-Luce lists or TRL pairs")
    consensus: Literal["all", "aggregate"] = Field(
        "all", description="several rankings of a task: keep all, or merge"
    )
    margin: bool = Field(False, description="pairwise: use the rank gap as Bradley-Terry margin")
    batch_size: int = Field(8, ge=1, description="rankings per step (listwise) or pairs per step (pairwise)")


def trl_config(cfg: RewardTrainConfig, workdir: Path):
    """The one mapping from our config to TRL's RewardConfig (both modes run on it)."""
    import torch
    from trl import RewardConfig

    bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return RewardConfig(
        bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        output_dir=str(workdir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.05,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        seed=cfg.seed,
        max_length=cfg.max_length,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=cfg.mode == "pairwise",
        disable_tqdm=False,
        dataloader_drop_last=False,
        ddp_find_unused_parameters=False,
    )


def peft_config(cfg: RewardTrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear"
    )


def progress_callback(cfg: RewardTrainConfig):
    """Writes step/total for the job runner and stops at max_seconds."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if cfg.max_seconds and time.monotonic() - self.t0 > cfg.max_seconds:
                control.should_training_stop = True
            if cfg.progress_file and state.is_world_process_zero:
                cfg.progress_file.write_text(
                    json.dumps({"step": state.global_step, "total": state.max_steps})
                )

    return Progress()


def _build_pairwise(cfg: RewardTrainConfig, train_rows: list[dict], tokenizer, args):
    from datasets import Dataset
    from trl import RewardTrainer

    from reward.data import pairwise_rows
    from reward.score import encode

    rows = []
    for p in pairwise_rows(train_rows, margin=cfg.margin, consensus=cfg.consensus):
        prompt = p["prompt"]  # the whole conversation
        row = {
            "chosen_ids": encode(tokenizer, prompt, p["chosen"][0]["content"], cfg.max_length),
            "rejected_ids": encode(tokenizer, prompt, p["rejected"][0]["content"], cfg.max_length),
        }
        if cfg.margin:
            row["margin"] = p["margin"]
        rows.append(row)
    return RewardTrainer(
        model=str(cfg.base_model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(cfg) if cfg.lora else None,
        callbacks=[progress_callback(cfg)],
    )


def _build_listwise(cfg: RewardTrainConfig, train_rows: list[dict], tokenizer, args):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from reward.data import listwise_groups
    from reward.listwise import ListwiseCollator, ListwiseTrainer
    from reward.score import encode

    groups = [
        {
            "ids": [encode(tokenizer, g["prompt"], t, cfg.max_length) for t in g["responses"]],
            "ranks": g["ranks"],
        }
        for g in listwise_groups(train_rows, cfg.consensus)
    ]
    model = AutoModelForSequenceClassification.from_pretrained(cfg.base_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(cfg))
    return ListwiseTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(groups),
        data_collator=ListwiseCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[progress_callback(cfg)],
    )


def main(cfg: RewardTrainConfig) -> Path:
    """Train, save, evaluate on the snapshot's eval split, and write metrics.json and the model card."""
    import tempfile

    from transformers import AutoTokenizer, set_seed

    from reward.data import read_snapshot
    from reward.score import ensure_pad_token

    set_seed(cfg.seed)
    train_rows = read_snapshot(cfg.snapshot, "train")
    if not train_rows:
        raise ValueError(f"the snapshot {cfg.snapshot} has no training rankings")
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
    ensure_pad_token(tokenizer)
    out = Path(cfg.output_dir)
    with tempfile.TemporaryDirectory() as workdir:
        args = trl_config(cfg, Path(workdir))
        build = _build_pairwise if cfg.mode == "pairwise" else _build_listwise
        trainer = build(cfg, train_rows, tokenizer, args)
        before = fingerprints(trainer.model)
        result = trainer.train()
        after = fingerprints(trainer.model)
        changed = sum(after[n] != fp for n, fp in before.items())
        if not trainer.is_world_process_zero():
            return out
        model = trainer.model.merge_and_unload() if cfg.lora else trainer.model
        model = getattr(model, "module", model)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        history = trainer.state.log_history
    from reward.evaluate import evaluate

    seconds = result.metrics.get("train_runtime", 0.0)
    epochs_run = (history[-1].get("epoch") if history else None) or cfg.epochs
    metrics = {
        "kind": "reward",
        "mode": cfg.mode,
        "base_model": str(cfg.base_model),
        "snapshot": _snapshot_id(cfg.snapshot),
        "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "train": {
            "rankings": len(train_rows),
            "steps": trainer.state.global_step,
            "seconds": seconds,
            "epochs": epochs_run,
            "rankings_per_s": len(train_rows) * epochs_run / seconds if seconds else None,
            "parameters_changed": changed,
            "parameters_trained": len(before),
            "processes": trainer.args.world_size,
        },
        "eval": evaluate(out, cfg.snapshot, "eval"),
        "config": cfg.model_dump(mode="json"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "README.md").write_text(model_card(cfg, metrics))
    return out


def fingerprints(model) -> dict[str, tuple[float, float]]:
    """Two numbers per trainable tensor (sum and sum of squares): enough to see that training
    changed it, without a second copy of the weights in memory."""
    import torch

    with torch.no_grad():
        return {
            n: (p.double().sum().item(), p.double().square().sum().item())
            for n, p in model.named_parameters()
            if p.requires_grad
        }


def _snapshot_id(snapshot: Path) -> str | None:
    manifest = read_manifest(snapshot)
    return manifest["id"] if manifest else None


def model_card(cfg: RewardTrainConfig, metrics: dict) -> str:
    ev = metrics["eval"]
    hidden = ev.get("hidden", {})
    return (
        f"# rankloop reward model ({cfg.mode})\n\n"
        f"- base checkpoint: `{cfg.base_model}`\n- snapshot: `{metrics['snapshot']}` ({cfg.snapshot})\n"
        f"- training: {metrics['train']['rankings']} rankings, {metrics['train']['steps']} steps, "
        f"{'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full fine-tuning'}, consensus `{cfg.consensus}`\n"
        f"- held-out pairwise accuracy: {ev['pairwise_accuracy']} on {ev['pairs']} pairs; ECE {ev['ece']}\n"
        + (
            f"- agreement with the simulated annotators' hidden preference: {hidden.get('model_vs_hidden')} "
            f"(the labels themselves: {hidden.get('labels_vs_hidden')})\n"
            if hidden
            else ""
        )
        + f"\n## Config\n\n```json\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```\n"
    )


if __name__ == "__main__":
    print(main(parse_cli(RewardTrainConfig, None, __doc__)))
