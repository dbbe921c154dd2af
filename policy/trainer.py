"""What the policy trainers share on top of `reward.scaffold`: the starting checkpoint (model and a
tokenizer with a chat template), and the run's outputs (`metrics.json` with the reward log, the
model card naming the parent checkpoint and the data).

Each method (`policy.sft`, `policy.dpo`, `policy.rl`) builds only its dataset (`policy.data`) and
its TRL trainer; its config is in `policy.config`:

    python -m policy.dpo --config dpo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m policy.dpo --config dpo.yaml
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

from policy.config import PolicyTrainConfig
from policy.data import check_base_model, no_chat_template
from reward.scaffold import fit, model_card, training_kind, write_outputs

Build = Callable[[PreTrainedModel, PreTrainedTokenizerBase, Path], Trainer]


def load_tokenizer(base_model: Path) -> PreTrainedTokenizerBase:
    """The starting checkpoint's tokenizer; a clear error for a checkpoint that is missing or has no
    chat template (the policy learns conversations)."""
    check_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise no_chat_template(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def run(cfg: PolicyTrainConfig, method: str, build: Build, extra: dict[str, Any]) -> Path:
    """`build(model, tokenizer, workdir)` -> TRL trainer; train, save a plain checkpoint, write
    metrics.json (`extra` goes into its `train` part) and the model card."""
    tokenizer = load_tokenizer(cfg.base_model)
    out = Path(cfg.output_dir)

    def start(workdir: Path) -> Trainer:
        return build(AutoModelForCausalLM.from_pretrained(cfg.base_model), tokenizer, workdir)

    done = fit(cfg, start, tokenizer, out)
    if done is None:  # not the main process
        return out
    metrics = {
        "kind": "sft" if method == "sft" else "policy",
        "method": method,
        "base_model": str(cfg.base_model),
        "loss_curve": done.loss_curve,
        "log": [h for h in done.history if "loss" in h or "reward" in h],
        "train": {**done.train_metrics(), "examples_per_s": done.samples_per_s, **extra},
        "config": cfg.model_dump(mode="json"),
    }
    facts = [
        f"parent checkpoint: `{cfg.base_model}`",
        *(f"{k}: `{v}`" for k, v in extra.items() if k in ("snapshot", "reward_model", "data")),
        f"steps: {done.steps}, {training_kind(cfg)}",
    ]
    return write_outputs(out, metrics, model_card(f"rankloop policy ({method})", facts, cfg))
