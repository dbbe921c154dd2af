"""`frozen_backbone`: yes (the head alone), no (every weight), or auto (the head where the trainer sees
no GPU, every weight where it does: one command for both machines). What ran is what the config in
metrics.json says; the choice's training paths are tested in test_reward_train.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reward.config import RewardTrainConfig

BASE = {"snapshot": Path("s"), "base_model": Path("m"), "output_dir": Path("o")}


def test_yaml_booleans_still_mean_yes_and_no_and_anything_else_is_named() -> None:
    assert RewardTrainConfig(**BASE, frozen_backbone=True).frozen_backbone == "yes"
    assert RewardTrainConfig(**BASE, frozen_backbone=False).frozen_backbone == "no"
    assert RewardTrainConfig(**BASE).frozen_backbone == "no"
    with pytest.raises(ValidationError, match="'no', 'yes' or 'auto'"):
        RewardTrainConfig(**BASE, frozen_backbone="maybe")
    with pytest.raises(ValidationError, match="frozen_backbone no"):  # heads need every weight
        RewardTrainConfig(**BASE, mode="listwise", attribute_heads=["helpfulness"], frozen_backbone="auto")


def test_auto_is_the_head_without_a_gpu_and_every_weight_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from reward.train import resolve_backbone

    auto = RewardTrainConfig(**BASE, frozen_backbone="auto")
    assert not torch.cuda.is_available()  # this machine: what CI runs on
    assert resolve_backbone(auto).frozen_backbone == "yes"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU machine's answer
    assert resolve_backbone(auto).frozen_backbone == "no"
    for given in ("yes", "no"):  # said outright: kept on either machine
        assert resolve_backbone(RewardTrainConfig(**BASE, frozen_backbone=given)).frozen_backbone == given
