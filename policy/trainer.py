"""What every policy trainer shares: the common config fields, the one mapping onto a TRL config,
the run (train, merge LoRA, save), and the outputs (`metrics.json`, model card).

Each method (`policy.sft`, `policy.dpo`, `policy.rl`) only builds its dataset and TRL trainer:

    python -m policy.dpo --config dpo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m policy.dpo --config dpo.yaml

On a machine without a GPU, bf16 and gradient checkpointing are off by default (TRL 1.16's
defaults stop at once there); on a GPU bf16 is on where supported.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from reward.snapshot_format import read_manifest
from reward.train import TrainingFields, fingerprints, progress_callback


class PolicyTrainConfig(TrainingFields):
    """Fields every policy method has; a field of another method is refused (extra='forbid')."""

    model_config = ConfigDict(extra="forbid")

    base_model: Path = Field(description="the Hugging Face checkpoint to start from (also DPO's reference)")
    output_dir: Path = Field(description="where the trained policy is written")
    epochs: float = Field(1.0, gt=0, description="passes over the training data")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    logging_steps: int = Field(5, ge=1, description="log the loss every this many steps")


def trl_args(cfg: PolicyTrainConfig, config_class: type, workdir: Path, **method: Any):
    """The one mapping from our config to a TRL config (SFTConfig, DPOConfig, GRPOConfig, RLOOConfig)."""
    import torch

    bf16 = cfg.bf16 if cfg.bf16 is not None else torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return config_class(
        output_dir=str(workdir),
        bf16=bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
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
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
        ddp_find_unused_parameters=False,
        **method,
    )


def peft_config(cfg: PolicyTrainConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear"
    )


def load_tokenizer(base_model: Path):
    """The starting checkpoint's tokenizer; a clear error for a checkpoint that is missing or has no
    chat template (the policy learns conversations)."""
    from transformers import AutoTokenizer

    if not (Path(base_model) / "config.json").is_file():
        raise ValueError(f"base_model {base_model} is not a Hugging Face model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer of {base_model} has no chat template; add one to its "
            "tokenizer_config.json (`chat_template`), or start from its chat/instruct variant"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def at_least_one_batch(rows: list, cfg: PolicyTrainConfig, what: str, per_row: int = 1) -> list:
    """The training rows, or a clear error when they do not fill one batch."""
    if len(rows) * per_row < cfg.batch_size:
        raise ValueError(
            f"{what}: {len(rows)}, fewer than one batch (batch_size {cfg.batch_size}"
            f"{f' = {cfg.batch_size // per_row} rows' if per_row > 1 else ''}); "
            "add data or lower batch_size"
        )
    return rows


def load_policy(cfg: PolicyTrainConfig):
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(cfg.base_model)
    return AutoModelForCausalLM.from_pretrained(cfg.base_model), tokenizer


def run(cfg: PolicyTrainConfig, method: str, build: Callable[[Any, Any, Path], Any], extra: dict) -> Path:
    """Build (model, tokenizer, workdir) -> TRL trainer, train, save a plain checkpoint, write metrics."""
    from transformers import set_seed

    set_seed(cfg.seed)
    model, tokenizer = load_policy(cfg)
    out = Path(cfg.output_dir)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build(model, tokenizer, Path(workdir))
        trainer.add_callback(progress_callback(cfg))
        before = fingerprints(trainer.model)
        result = trainer.train()
        changed = sum(fingerprints(trainer.model)[n] != fp for n, fp in before.items())
        if not trainer.is_world_process_zero():
            return out
        trained = getattr(trainer.model, "module", trainer.model)
        trained = trained.merge_and_unload() if cfg.lora else trained
        trained.save_pretrained(out)
        tokenizer.save_pretrained(out)
        history = trainer.state.log_history
    seconds = result.metrics.get("train_runtime", 0.0)
    metrics = {
        "kind": "sft" if method == "sft" else "policy",
        "method": method,
        "base_model": str(cfg.base_model),
        "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "log": [h for h in history if "loss" in h or "reward" in h],
        "train": {
            "steps": trainer.state.global_step,
            "seconds": seconds,
            "examples_per_s": result.metrics.get("train_samples_per_second"),
            "parameters_changed": changed,
            "parameters_trained": len(before),
            "processes": trainer.args.world_size,
            **extra,
        },
        "config": cfg.model_dump(mode="json"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (out / "README.md").write_text(
        f"# rankloop policy ({method})\n\n- parent checkpoint: `{cfg.base_model}`\n"
        + "".join(f"- {k}: `{v}`\n" for k, v in extra.items() if k in ("snapshot", "reward_model", "data"))
        + f"- steps: {metrics['train']['steps']}, {'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full fine-tuning'}\n"
        + f"\n## Config\n\n```json\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```\n"
    )
    return out


def snapshot_id(path: Path) -> str | None:
    manifest = read_manifest(path)
    return manifest["id"] if manifest else None
