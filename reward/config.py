"""The reward trainer's configuration, and the training fields every rankloop trainer shares.

Pydantic only (no torch): the service validates a job's config with these models before the job
exists, and `python -m reward.train` (`reward/train.py`) reads the same model from YAML and flags.
`reward/scaffold.py` maps the shared fields onto TRL's configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class TrainingFields(BaseModel):
    """Fields every rankloop trainer has (the reward model here, the policies in `policy/config.py`)."""

    base_model: Path = Field(description="the Hugging Face checkpoint training starts from")
    output_dir: Path = Field(description="where the trained model is written")
    lora: bool = Field(False, description="train LoRA adapters instead of every weight (merged when saved)")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    epochs: float = Field(3.0, gt=0, description="passes over the training data")
    max_steps: int = Field(-1, description="stop after this many steps (-1: run the epochs)")
    max_seconds: float | None = Field(None, gt=0, description="stop training after this much wall time")
    learning_rate: float = Field(5e-4, gt=0, description="peak learning rate")
    batch_size: int = Field(8, ge=1, description="examples per step and process")
    max_length: int = Field(512, ge=8, description="longest prompt + response, in tokens")
    logging_steps: int = Field(10, ge=1, description="log the loss every this many steps")
    bf16: bool | None = Field(
        None,
        description="bf16 mixed precision (default: on GPUs that support it; "
        "off on CPU, where it is emulated and slow)",
    )
    gradient_checkpointing: bool = Field(
        False, description="trade compute for memory (large models on small GPUs)"
    )
    seed: int = Field(0, description="random seed")
    progress_file: Path | None = Field(None, description="JSON progress for `rankloop train` (step, total)")


class RewardTrainConfig(TrainingFields):
    snapshot: Path = Field(description="snapshot directory or its rankings.parquet")
    base_model: Path = Field(description="Hugging Face checkpoint the reward head goes on")
    output_dir: Path = Field(description="where the reward model is written")
    mode: Literal["listwise", "pairwise"] = Field("listwise", description="Plackett-Luce lists or TRL pairs")
    consensus: Literal["all", "aggregate", "borda", "bradley-terry", "plackett-luce", "ranked-pairs"] = Field(
        "all",
        description="several rankings of a task: keep all, or merge them by mean rank (aggregate, borda), "
        "Bradley-Terry, Plackett-Luce or ranked pairs",
    )
    margin: bool = Field(False, description="pairwise: use the rank gap as Bradley-Terry margin")
    strength_margin: bool = Field(
        True,
        description="use annotators' preference strengths: as the pairwise margin, as listwise stage weights",
    )
    attribute_heads: list[str] = Field(
        default_factory=list,
        description="listwise: also predict these rubric attributes' ratings (e.g. helpfulness, "
        "harmlessness) as extra outputs after the reward (output 0)",
    )
    attribute_weight: float = Field(1.0, ge=0, description="weight of the attribute heads' squared error")
    objective: Literal["overall", "helpfulness", "harmlessness"] = Field(
        "overall",
        description="what the model scores: every ranking, helpfulness (all but the harmlessness "
        "batches) or harmlessness (those batches, unsafe flags, harmlessness ratings)",
    )
    harmless_batches: list[str] = Field(
        default_factory=lambda: ["hh-harmless"], description="batches whose rankings are about harm only"
    )
    frozen_backbone: Literal["no", "yes", "auto"] = Field(
        "no",
        description="yes: train only the reward head, on the frozen model's states computed once (one "
        "forward pass per response: fits a CPU; reward/head.py; mode, LoRA and epochs do not apply); "
        "auto: that where the trainer sees no GPU, the whole model where it does",
    )

    @field_validator("frozen_backbone", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        """`frozen_backbone: true` (YAML's boolean, the field's earlier type) still means yes."""
        return {True: "yes", False: "no"}.get(value, value) if isinstance(value, bool) else value

    batch_size: int = Field(8, ge=1, description="rankings per step (listwise) or pairs per step (pairwise)")

    @model_validator(mode="after")
    def _heads_need_listwise(self) -> RewardTrainConfig:
        if self.attribute_heads and (self.mode != "listwise" or self.frozen_backbone != "no"):
            raise ValueError(
                "attribute_heads train with the listwise loss on the whole model: set mode listwise "
                "and frozen_backbone no, or leave attribute_heads empty"
            )
        return self
