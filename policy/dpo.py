"""Direct preference optimisation (TRL's `DPOTrainer`) on a snapshot's strict pairs; the reference
is the starting checkpoint. Full or LoRA (merged on save).

A pair's two responses must answer the same prompt, so a pair is kept when both were sampled
under the same system prompt, which goes first in the prompt the policy learns from (pairs across
system prompts compare arms, not answers, and are left out). `system_prompt: NAME` trains for one
arm only; unset, for every arm. `rank_gap_weighting` repeats a pair once per rank of gap, so
clearer preferences weigh more. The config is `policy.config.DPOTrainConfig`; the pairs are
`policy.data.dpo_pairs`.

    python -m policy.dpo --config dpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from policy.config import DPOTrainConfig
from policy.data import dpo_rows
from policy.trainer import run
from reward.configfile import parse_cli
from reward.scaffold import lora_config, trl_args
from reward.snapshot_format import snapshot_id


def main(cfg: DPOTrainConfig) -> Path:
    rows = dpo_rows(cfg)

    def build(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, workdir: Path) -> DPOTrainer:
        args = trl_args(cfg, DPOConfig, workdir, beta=cfg.beta, max_length=cfg.max_length)
        return DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
        )

    return run(cfg, "dpo", build, {"pairs": len(rows), "snapshot": snapshot_id(cfg.snapshot)})


if __name__ == "__main__":
    print(main(parse_cli(DPOTrainConfig, None, __doc__)))
