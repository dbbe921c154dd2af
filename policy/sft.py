"""Supervised fine-tuning (TRL's `SFTTrainer`) from a pretrained checkpoint, on either
(a) an instruction file: JSONL rows `{"messages": [...]}` in chat format, system turns included,
    the last turn an assistant turn, or
(b) best-of-K: the top-ranked response of each ranking in a snapshot's training split, after the
    system prompt it was sampled under and the conversation it answered.

The config is `policy.config.SFTTrainConfig`; the data is `policy.data.sft_rows`.

    python -m policy.sft --config sft.yaml      # data: instructions.jsonl | snapshot: DIR
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from policy.config import SFTTrainConfig
from policy.data import sft_rows
from policy.trainer import run
from reward.configfile import parse_cli
from reward.scaffold import lora_config, trl_args
from reward.snapshot_format import snapshot_id


def main(cfg: SFTTrainConfig) -> Path:
    rows = sft_rows(cfg)

    def build(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, workdir: Path) -> SFTTrainer:
        args = trl_args(cfg, SFTConfig, workdir, max_length=cfg.max_length, assistant_only_loss=False)
        return SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
        )

    source = {"snapshot": snapshot_id(cfg.snapshot)} if cfg.snapshot is not None else {"data": str(cfg.data)}
    return run(cfg, "sft", build, {"examples": len(rows), **source})


if __name__ == "__main__":
    print(main(parse_cli(SFTTrainConfig, None, __doc__)))
