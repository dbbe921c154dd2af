"""Supervised fine-tuning (TRL's `SFTTrainer`) from a pretrained checkpoint, on either
(a) an instruction file: JSONL rows `{"messages": [...]}` in chat format, system turns included,
    the last turn an assistant turn, or
(b) best-of-K: the top-ranked response of each ranking in a snapshot's training split, after the
    system prompt it was sampled under and the conversation it answered.

    python -m policy.sft --config sft.yaml      # data: instructions.jsonl | snapshot: DIR
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from policy.trainer import PolicyTrainConfig, at_least_one_batch, peft_config, run, snapshot_id, trl_args
from reward.configfile import parse_cli
from reward.data import conversation, read_snapshot


class SFTTrainConfig(PolicyTrainConfig):
    data: Path | None = Field(None, description="instruction JSONL (rows with chat `messages`)")
    snapshot: Path | None = Field(None, description="snapshot: fine-tune on each ranking's best response")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")

    @model_validator(mode="after")
    def _one_source(self) -> SFTTrainConfig:
        if (self.data is None) == (self.snapshot is None):
            raise ValueError("give exactly one of data (an instruction file) and snapshot (best-of-K)")
        return self


def read_instructions(path: Path) -> list[dict]:
    """Chat rows whose last turn is the assistant's; ValueError names each bad line."""
    rows, problems = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            msgs = json.loads(line).get("messages")
        except (json.JSONDecodeError, AttributeError):
            problems.append(f"line {n}: not a JSON object")
            continue
        ok = (
            isinstance(msgs, list)
            and msgs
            and all(
                isinstance(m, dict)
                and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)
                for m in msgs
            )
            and msgs[-1]["role"] == "assistant"
        )
        if not ok:
            problems.append(
                f'line {n}: expected "messages" with system/user/assistant turns ending in an assistant one'
            )
            continue
        rows.append({"messages": msgs})
    if problems or not rows:
        raise ValueError(f"{path}: " + ("; ".join(problems[:10]) if problems else "holds no examples"))
    return rows


def best_of_k(snapshot: Path) -> list[dict]:
    """The top-ranked response of each training ranking (the first shown among tied bests)."""
    out = []
    for r in read_snapshot(snapshot, "train"):
        best = min(range(len(r["ranks"])), key=lambda i: (r["ranks"][i], i))
        system = r["system_prompt_texts"][best]
        out.append(
            {
                "messages": ([{"role": "system", "content": system}] if system else [])
                + conversation(r)
                + [{"role": "assistant", "content": r["texts"][best]}]
            }
        )
    if not out:
        raise ValueError(f"the snapshot {snapshot} has no training rankings")
    return out


def dataset(cfg: SFTTrainConfig) -> list[dict]:
    rows = read_instructions(cfg.data) if cfg.data else best_of_k(cfg.snapshot)
    return at_least_one_batch(rows, cfg, f"examples in {cfg.data or cfg.snapshot}")


def main(cfg: SFTTrainConfig) -> Path:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = dataset(cfg)

    def build(model, tokenizer, workdir: Path):
        args = trl_args(cfg, SFTConfig, workdir, max_length=cfg.max_length, assistant_only_loss=False)
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )

    source = {"data": str(cfg.data)} if cfg.data else {"snapshot": snapshot_id(cfg.snapshot)}
    return run(cfg, "sft", build, {"examples": len(rows), **source})


if __name__ == "__main__":
    print(main(parse_cli(SFTTrainConfig, None, __doc__)))
