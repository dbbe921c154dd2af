"""The configurations of the policy stages: SFT, DPO, online RL (GRPO/RLOO), evaluation, pretraining.

Pydantic only (no torch): the service validates a job's config with these models before the job
exists; each trainer (`python -m policy.sft|dpo|rl|evaluate|pretrain`) reads the same model from
YAML and flags. A policy method's config refuses the fields of another method (extra='forbid').
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reward.config import TrainingFields


class PolicyTrainConfig(TrainingFields):
    """Fields every policy method has; a field of another method is refused (extra='forbid')."""

    model_config = ConfigDict(extra="forbid")

    base_model: Path = Field(description="the Hugging Face checkpoint to start from (also DPO's reference)")
    output_dir: Path = Field(description="where the trained policy is written")
    epochs: float = Field(1.0, gt=0, description="passes over the training data")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    logging_steps: int = Field(5, ge=1, description="log the loss every this many steps")


class SFTTrainConfig(PolicyTrainConfig):
    data: Path | None = Field(None, description="instruction JSONL (rows with chat `messages`)")
    snapshot: Path | None = Field(None, description="snapshot: fine-tune on each ranking's best response")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")

    @model_validator(mode="after")
    def _one_source(self) -> SFTTrainConfig:
        if (self.data is None) == (self.snapshot is None):
            raise ValueError("give exactly one of data (an instruction file) and snapshot (best-of-K)")
        return self


class DPOTrainConfig(PolicyTrainConfig):
    snapshot: Path = Field(description="snapshot directory (its training split is used)")
    system_prompt: str | None = Field(
        None, description="train for this system prompt only ('name vN' or 'name')"
    )
    beta: float = Field(0.1, gt=0, description="strength of the KL pull towards the reference")
    rank_gap_weighting: bool = Field(False, description="repeat each pair once per rank of gap")
    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")


class RLTrainConfig(PolicyTrainConfig):
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="GRPO or RLOO")
    snapshot: Path = Field(description="snapshot whose training prompts are the prompt pool")
    reward_model: Path = Field(description="reward model directory (rankloop's active one by default)")
    safety_reward_model: Path | None = Field(
        None,
        description="a harmlessness reward model: where its score is below safety_threshold it is the "
        "reward instead of reward_model's (Llama 2's combination)",
    )
    safety_threshold: float = Field(
        0.0,
        description="the harmlessness score below which safety takes over the reward, in the harmlessness "
        "model's own units: a Bradley-Terry score has no fixed zero, so choose it from that model's "
        "scores of answers known to be safe and unsafe",
    )
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


class EvalConfig(BaseModel):
    """`python -m policy.evaluate`: a candidate against a baseline on paired responses."""

    model_config = ConfigDict(extra="forbid")

    comparisons: Path = Field(description="JSONL: group, messages, candidate, baseline, optional scores")
    output_dir: Path = Field(description="where metrics.json and judgments.jsonl are written")
    reward_model: Path | None = Field(
        None, description="reward model that judges (None: only the given scores)"
    )
    gold_model: Path | None = Field(
        None, description="a gold reward model (trained on labels the loop never saw): the judge 'gold'"
    )
    safety_model: Path | None = Field(
        None, description="a harmlessness reward model: the judge 'safety' (the two-objective gate)"
    )
    candidate_model: Path | None = Field(None, description="the candidate checkpoint, for the KL estimate")
    reference_model: Path | None = Field(None, description="the reference checkpoint, for the KL estimate")
    temperature: float = Field(1.0, ge=0, description="the temperature the responses were sampled at")
    top_p: float = Field(1.0, gt=0, le=1, description="the nucleus mass the responses were sampled with")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the intervals")
    seed: int = Field(0, description="seed of the bootstrap")
    max_length: int = Field(1024, ge=8, description="longest conversation + response scored, in tokens")
    progress_file: Path | None = Field(None, description="JSON progress (step, total) for the job runner")


class PretrainConfig(BaseModel):
    """`python -m policy.pretrain`: the tiny built-in chat model (sizes in `policy.pretrain.SIZES`)."""

    output_dir: Path = Field(description="directory to write the Hugging Face model into")
    size: Literal["tiny", "small", "bench"] = Field("tiny", description="model size preset")
    steps: int = Field(200, ge=0, description="optimizer steps of pretraining (0 = random init)")
    batch_size: int = Field(16, ge=1, description="sequences per step")
    seq_len: int = Field(128, ge=16, le=2048, description="tokens per training sequence")
    learning_rate: float = Field(2e-3, gt=0, description="peak learning rate")
    n_transcripts: int = Field(4000, ge=10, description="generated transcripts to train on")
    max_position_embeddings: int = Field(1024, ge=64, description="longest context the model accepts")
    seed: int = Field(0, description="random seed for corpus, init and training")
