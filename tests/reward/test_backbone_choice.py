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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine, CI's
    assert resolve_backbone(auto).frozen_backbone == "yes"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU machine's answer
    assert resolve_backbone(auto).frozen_backbone == "no"
    for given in ("yes", "no"):  # said outright: kept on either machine
        assert resolve_backbone(RewardTrainConfig(**BASE, frozen_backbone=given)).frozen_backbone == given


def test_only_the_main_process_fits_a_head(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Under `accelerate launch` with N processes the head is fit by rank 0 alone; another rank returns
    before reading anything (the snapshot here does not even exist) and writes nothing."""
    from reward.train import main

    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "head"
    cfg = RewardTrainConfig(
        snapshot=tmp_path / "none", base_model=tmp_path, output_dir=out, frozen_backbone="yes"
    )
    assert main(cfg) == out and not out.exists()
