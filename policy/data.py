"""The policy methods' training data, and every check on a policy job that needs no model (no torch).

The trainers build their datasets with these functions; the service calls the same checks before a
job exists, so that a job is refused at once for what its trainer would stop on:

* SFT: an instruction file (JSONL rows `{"messages": [...]}`, the last turn the assistant's) or
  best-of-K (the top-ranked response of each training ranking, after its system prompt and the
  conversation it answered);
* DPO: each ranking's strict pairs under one system prompt (the arm's system prompt first);
* online RL: each training conversation once, with the batch shape, generation mode and reward
  model checked;
* every method: a starting checkpoint with a tokenizer and a chat template, and at least one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from policy.config import DPOTrainConfig, PolicyTrainConfig, RLTrainConfig, SFTTrainConfig
from reward.checkpoint import has_chat_template, has_tokenizer, require_model_dir
from reward.data import conversation, read_snapshot, strict_pairs


def check_base_model(base_model: Path) -> None:
    """A starting checkpoint a policy can learn conversations from: a model directory whose tokenizer
    has a chat template. ValueError says what is missing."""
    require_model_dir(base_model, "base_model")
    if not has_tokenizer(base_model):
        raise ValueError(
            f"base_model {base_model} has no tokenizer (no tokenizer.json or tokenizer_config.json); "
            "save the tokenizer into it with save_pretrained"
        )
    if not has_chat_template(base_model):
        raise no_chat_template(base_model)


def no_chat_template(base_model: Path) -> ValueError:
    return ValueError(
        f"the tokenizer of {base_model} has no chat template; add one to its "
        "tokenizer_config.json (`chat_template`), or start from its chat/instruct variant"
    )


def at_least_one_batch(rows: list[dict], cfg: PolicyTrainConfig, what: str, per_row: int = 1) -> list[dict]:
    """The training rows, or a clear error when they do not fill one batch."""
    if len(rows) * per_row < cfg.batch_size:
        raise ValueError(
            f"{what}: {len(rows)}, fewer than one batch (batch_size {cfg.batch_size}"
            f"{f' = {cfg.batch_size // per_row} rows' if per_row > 1 else ''}); "
            "add data or lower batch_size"
        )
    return rows


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


def sft_rows(cfg: SFTTrainConfig) -> list[dict]:
    if cfg.data is not None:
        rows, source = read_instructions(cfg.data), cfg.data
    else:
        assert cfg.snapshot is not None  # the config holds exactly one of them
        rows, source = best_of_k(cfg.snapshot), cfg.snapshot
    return at_least_one_batch(rows, cfg, f"examples in {source}")


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


def dpo_rows(cfg: DPOTrainConfig) -> list[dict]:
    rows = dpo_pairs(cfg.snapshot, cfg.system_prompt, cfg.rank_gap_weighting)
    return at_least_one_batch(
        rows,
        cfg,
        f"same-system-prompt pairs in the snapshot {cfg.snapshot}"
        f"{f' for {cfg.system_prompt!r}' if cfg.system_prompt else ''} (rank more tasks)",
    )


def prompt_pool(snapshot: Path) -> list[dict]:
    """Each training conversation once."""
    seen, out = set(), []
    for r in read_snapshot(snapshot, "train"):
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            out.append({"prompt": conversation(r)})
    return out


def rl_prompts(cfg: RLTrainConfig, cuda: Callable[[], bool]) -> list[dict]:
    """The prompt pool, after every check that needs no model: batch shape, generation mode (`cuda()`
    is asked only for a vLLM server), reward model, data size."""
    if cfg.batch_size % cfg.num_generations:
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of num_generations {cfg.num_generations}"
        )
    if cfg.generation == "vllm_server":
        if not cuda():
            raise ValueError(
                "generation vllm_server needs CUDA: TRL syncs the policy's weights to its vLLM server "
                "over NCCL. On this machine use generation: vllm (colocated) or transformers"
            )
        if not cfg.vllm_server_url:
            raise ValueError("generation vllm_server needs vllm_server_url (where `trl vllm-serve` listens)")
    require_model_dir(
        cfg.reward_model, "reward_model", "give a reward model directory `rankloop train reward` wrote"
    )
    return at_least_one_batch(
        prompt_pool(cfg.snapshot),
        cfg,
        f"training prompts in the snapshot {cfg.snapshot}",
        per_row=cfg.num_generations,
    )


def training_rows(cfg: PolicyTrainConfig, cuda: Callable[[], bool]) -> list[dict]:
    """The method's training rows (what the trainer would stop on at once is raised as ValueError)."""
    if isinstance(cfg, SFTTrainConfig):
        return sft_rows(cfg)
    if isinstance(cfg, DPOTrainConfig):
        return dpo_rows(cfg)
    if isinstance(cfg, RLTrainConfig):
        return rl_prompts(cfg, cuda)
    raise TypeError(f"no training data for {type(cfg).__name__}")
