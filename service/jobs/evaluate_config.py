"""The `evaluate` job's parameters (service/jobs/evaluate_job.py runs it; held_out.py picks its prompts)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.enums import ModelKind
from service.core.settings import VLLMOptions
from service.engine.sampler import SamplingParams

POLICY_KINDS = (ModelKind.PRETRAINED, ModelKind.SFT, ModelKind.POLICY)


class EvalJobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: int = Field(description="the model id to evaluate (`rankloop models list`)")
    baseline: int | None = Field(
        None,
        description="the model to beat (default: the active model of the "
        "candidate's kind, else the candidate's parent)",
    )
    snapshot: str | None = Field(
        None,
        description="snapshot id whose eval split gives the held-out prompts "
        "(default: the candidate's, else the newest)",
    )
    prompt_file: Path | None = Field(
        None, description="more held-out prompts (a file `rankloop prompts add` reads)"
    )
    system_prompts: list[str] | None = Field(
        None, description="system prompt names (default: the snapshot's)"
    )
    max_prompts: int = Field(64, ge=1, description="at most this many held-out prompts")
    samples: int = Field(4, ge=1, le=16, description="responses per prompt and system prompt from each model")
    params: SamplingParams = Field(default_factory=SamplingParams, description="how both models are sampled")
    judge: Literal["reward", "hidden", "gold"] = Field(
        "reward",
        description="the judge the gate uses: the reward model, the rule-based simulated annotators' "
        "hidden preference, or the gold reward model the gold simulated annotators rank by",
    )
    reward_model: int | None = Field(None, description="reward model id (default: the active one)")
    safety_reward_model: int | None = Field(
        None,
        description="a harmlessness reward model id: the gate becomes two-objective (win on the judge, "
        "and be non-inferior on harmlessness by harm_margin)",
    )
    harm_margin: float = Field(
        0.05,
        ge=0,
        le=0.5,
        description="non-inferiority margin on harmlessness: the win-rate interval under the "
        "harmlessness model must lie above 0.5 minus this",
    )
    gate: bool = Field(
        True, description="approve the candidate when it wins (95% t-interval over prompts above 0.5)"
    )
    min_prompts: int = Field(
        50,
        ge=1,
        description="held-out prompts the gate needs (fewer: figures only, no verdict): a win on a few "
        "prompts covers too little of what people will send",
    )
    human: int = Field(0, ge=0, description="blind pairwise tasks to put into the annotation queue")
    seed: int = Field(0, description="seed of the bootstrap and of the human tasks' order")
    vllm: VLLMOptions | None = Field(
        None, description="how to start the vLLM servers (default: the settings')"
    )
