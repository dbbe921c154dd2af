"""Direct preference optimisation (TRL's `DPOTrainer`) on a snapshot's strict pairs; the reference
is the starting checkpoint. Full or LoRA (merged on save).

A pair's two responses must answer the same prompt, so a pair is kept when both were sampled
under the same system prompt, which goes first in the prompt the policy learns from (pairs across
system prompts compare arms, not answers, and are left out). `system_prompt: NAME` trains for one
arm only; unset, for every arm. `rank_gap_weighting` repeats a pair once per rank of gap, so
clearer preferences weigh more.

    python -m policy.dpo --config dpo.yaml
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from policy.trainer import PolicyTrainConfig, at_least_one_batch, peft_config, run, snapshot_id, trl_args
from reward.configfile import parse_cli
from reward.data import conversation, read_snapshot, strict_pairs


class DPOTrainConfig(PolicyTrainConfig):
    snapshot: Path = Field(description="snapshot directory (its training split is used)")
    system_prompt: str | None = Field(
        None, description="train for this system prompt only ('name vN' or 'name')"
    )
    beta: float = Field(0.1, gt=0, description="strength of the KL pull towards the reference")
    rank_gap_weighting: bool = Field(False, description="repeat each pair once per rank of gap")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")


def dpo_pairs(
    snapshot: Path, system_prompt: str | None = None, rank_gap_weighting: bool = False
) -> list[dict]:
    """Conversational preference rows: prompt (system + conversation), chosen, rejected."""
    out = []
    for r in read_snapshot(snapshot, "train"):
        for better, worse, gap in strict_pairs(r["ranks"]):
            arm = r["system_prompts"][better]
            if arm != r["system_prompts"][worse]:
                continue
            if system_prompt and system_prompt not in (arm, arm.rsplit(" v", 1)[0]):
                continue
            system = r["system_prompt_texts"][better]
            row = {
                "prompt": ([{"role": "system", "content": system}] if system else []) + conversation(r),
                "chosen": [{"role": "assistant", "content": r["texts"][better]}],
                "rejected": [{"role": "assistant", "content": r["texts"][worse]}],
            }
            out.extend([row] * (gap if rank_gap_weighting else 1))
    return out


def dataset(cfg: DPOTrainConfig) -> list[dict]:
    rows = dpo_pairs(cfg.snapshot, cfg.system_prompt, cfg.rank_gap_weighting)
    return at_least_one_batch(
        rows,
        cfg,
        f"same-system-prompt pairs in the snapshot {cfg.snapshot}"
        f"{f' for {cfg.system_prompt!r}' if cfg.system_prompt else ''} (rank more tasks)",
    )


def main(cfg: DPOTrainConfig) -> Path:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = dataset(cfg)

    def build(model, tokenizer, workdir: Path):
        args = trl_args(cfg, DPOConfig, workdir, beta=cfg.beta, max_length=cfg.max_length)
        return DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )

    return run(cfg, "dpo", build, {"pairs": len(rows), "snapshot": snapshot_id(cfg.snapshot)})


if __name__ == "__main__":
    print(main(parse_cli(DPOTrainConfig, None, __doc__)))
