"""The checks a policy job passes before it exists (the trainers run the same ones), without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy.config import RLTrainConfig
from policy.data import check_base_model, rl_prompts


def never() -> bool:
    raise AssertionError("CUDA was asked about without generation vllm_server")


def test_online_rl_checks_the_batch_and_the_generation_mode_first(tmp_path: Path) -> None:
    cfg = RLTrainConfig(
        base_model=tmp_path, output_dir=tmp_path / "out", snapshot=tmp_path, reward_model=tmp_path
    )
    with pytest.raises(ValueError, match="batch_size 6 must be a multiple of num_generations 4"):
        rl_prompts(cfg.model_copy(update={"batch_size": 6}), never)
    with pytest.raises(ValueError, match="vllm_server needs CUDA: TRL syncs"):
        rl_prompts(cfg.model_copy(update={"generation": "vllm_server"}), lambda: False)
    with pytest.raises(ValueError, match="needs vllm_server_url"):
        rl_prompts(cfg.model_copy(update={"generation": "vllm_server"}), lambda: True)
    with pytest.raises(ValueError, match=f"reward_model {tmp_path} is not a Hugging Face model directory"):
        rl_prompts(cfg, never)


def test_the_starting_checkpoint_needs_a_tokenizer_with_a_chat_template(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base_model .* is not a Hugging Face model directory"):
        check_base_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="has no tokenizer"):
        check_base_model(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<end>"}))
    with pytest.raises(ValueError, match="has no chat template"):
        check_base_model(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    check_base_model(tmp_path)
