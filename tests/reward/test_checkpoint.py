"""The checkpoint-directory checks and the metrics file every stage shares (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reward.checkpoint import has_chat_template, is_model_dir, read_metrics, require_model_dir, write_metrics


def test_a_model_directory_is_one_with_config_json(tmp_path: Path) -> None:
    assert not is_model_dir(tmp_path)
    with pytest.raises(
        KeyError, match=f"--model {tmp_path} is not a Hugging Face model directory: it has no"
    ):
        require_model_dir(tmp_path, "--model", "give one", KeyError)  # the caller's error type and words
    (tmp_path / "config.json").write_text("{}")
    assert is_model_dir(tmp_path) and require_model_dir(tmp_path, "base_model") == tmp_path


def test_a_chat_template_is_found_where_transformers_reads_it(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<end>"}))
    assert not has_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert has_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    assert has_chat_template(tmp_path)


def test_metrics_are_written_whole_and_read_back(tmp_path: Path) -> None:
    assert read_metrics(tmp_path / "out") is None
    write_metrics(tmp_path / "out", {"loss": [1.0, 0.5], "path": tmp_path})
    assert read_metrics(tmp_path / "out") == {"loss": [1.0, 0.5], "path": str(tmp_path)}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["metrics.json"]  # no temporary file left
    (tmp_path / "out" / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_metrics(tmp_path / "out")
