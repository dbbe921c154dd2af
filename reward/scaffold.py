"""What every rankloop trainer does the same way, around a TRL (or transformers) trainer it is handed:

* `trl_args`: the one mapping from the shared training fields (`reward.config.TrainingFields`)
  onto a TRL config (`RewardConfig`, `SFTConfig`, `DPOConfig`, `GRPOConfig`, `RLOOConfig`);
* `lora_config`: the LoRA adapters when `lora` is set;
* `fit`: seed, build the trainer in a scratch directory, report progress (and stop at
  `max_seconds`), train, see which weights changed, merge LoRA and save a plain checkpoint;
* `model_card` and `write_outputs`: the model card and `metrics.json` beside the checkpoint.

The reward trainer (`reward/train.py`) and the policy trainers (`policy/trainer.py`) keep only what
differs: their data, their TRL trainer, their metrics. Under `accelerate launch` every process trains
and the main one saves.

On a machine without a GPU bf16 is off and training runs on the CPU (TRL 1.16's defaults, bf16 on,
stop at once there); on a GPU bf16 is on where it is supported, unless the config says otherwise.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from peft import LoraConfig
from pydantic import BaseModel
from transformers import (
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)

from reward.checkpoint import write_metrics
from reward.config import TrainingFields

Args = TypeVar("Args", bound=TrainingArguments)


def trl_args(cfg: TrainingFields, config_class: type[Args], workdir: Path, **method: Any) -> Args:
    """The one mapping from our training fields to a TRL config; `method` adds that method's own."""
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
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
        use_cpu=not cuda,
        disable_tqdm=False,
        dataloader_drop_last=False,
        ddp_find_unused_parameters=False,
        **method,
    )


def lora_config(cfg: TrainingFields, task_type: Literal["SEQ_CLS", "CAUSAL_LM"]) -> LoraConfig | None:
    """LoRA adapters on every linear layer when `cfg.lora` is set; None trains every weight."""
    if not cfg.lora:
        return None
    return LoraConfig(
        task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear"
    )


def training_kind(cfg: TrainingFields) -> str:
    return f"LoRA r={cfg.lora_r}" if cfg.lora else "full fine-tuning"


class Progress(TrainerCallback):
    """Writes step/total for the job runner (main process only) and stops at max_seconds."""

    def __init__(self, cfg: TrainingFields):
        self.cfg = cfg
        self.t0 = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.t0 = time.monotonic()

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.cfg.max_seconds and time.monotonic() - self.t0 > self.cfg.max_seconds:
            control.should_training_stop = True
        if self.cfg.progress_file and state.is_world_process_zero:
            self.cfg.progress_file.write_text(
                json.dumps({"step": state.global_step, "total": state.max_steps})
            )


def fingerprints(model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    """Two numbers per trainable tensor (sum and sum of squares): enough to see that training
    changed it, without a second copy of the weights in memory."""
    with torch.no_grad():
        return {
            n: (p.double().sum().item(), p.double().square().sum().item())
            for n, p in model.named_parameters()
            if p.requires_grad
        }


@dataclass(frozen=True)
class Fit:
    """What a finished training run reports (on the main process)."""

    steps: int
    seconds: float
    samples_per_s: float | None
    history: list[dict[str, Any]]
    parameters_changed: int
    parameters_trained: int
    processes: int

    @property
    def loss_curve(self) -> list[dict[str, Any]]:
        return [{"step": h["step"], "loss": h["loss"]} for h in self.history if "loss" in h]

    @property
    def epochs(self) -> float | None:
        """Epochs covered (fractional when stopped early); None when nothing was logged."""
        return self.history[-1].get("epoch") if self.history else None

    def train_metrics(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "parameters_changed": self.parameters_changed,
            "parameters_trained": self.parameters_trained,
            "processes": self.processes,
        }


def _model(trainer: Trainer) -> torch.nn.Module:
    if trainer.model is None:
        raise ValueError("the trainer was built without a model")
    return trainer.model


def fit(
    cfg: TrainingFields,
    build: Callable[[Path], Trainer],
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
) -> Fit | None:
    """Seed, build the trainer (`build(scratch dir)`; it loads the model), train, and save a plain
    checkpoint (LoRA merged in, so vLLM and transformers load it as is) with its tokenizer into `out`.
    None on every process but the main one, which alone writes."""
    set_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as workdir:  # TRL wants a directory; nothing of it is kept
        trainer = build(Path(workdir))
        trainer.add_callback(Progress(cfg))
        before = fingerprints(_model(trainer))
        result = trainer.train()
        after = fingerprints(_model(trainer))
        if not trainer.is_world_process_zero():
            return None
        model: Any = getattr(trainer.model, "module", trainer.model)  # unwrapped from DDP
        model = model.merge_and_unload() if cfg.lora else model
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return Fit(
        steps=trainer.state.global_step,
        seconds=result.metrics.get("train_runtime", 0.0),
        samples_per_s=result.metrics.get("train_samples_per_second"),
        history=trainer.state.log_history,
        parameters_changed=sum(after[n] != fp for n, fp in before.items()),
        parameters_trained=len(before),
        processes=trainer.args.world_size,
    )


def model_card(title: str, facts: list[str], cfg: BaseModel) -> str:
    """A README.md: the title, one bullet per fact (base checkpoint, data, training), the config."""
    return (
        f"# {title}\n\n"
        + "".join(f"- {fact}\n" for fact in facts)
        + f"\n## Config\n\n```json\n{json.dumps(cfg.model_dump(mode='json'), indent=2)}\n```\n"
    )


def write_outputs(out: Path, metrics: dict[str, Any], card: str) -> Path:
    """metrics.json and the model card beside the checkpoint; returns the checkpoint directory."""
    write_metrics(out, metrics)
    (out / "README.md").write_text(card)
    return out
