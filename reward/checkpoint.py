"""The files the stages exchange through a checkpoint directory, read and written without torch (the
service checks directories and reads results with this module; the trainers write with it).

* A Hugging Face model directory is one `save_pretrained` wrote: it holds `config.json`
  (`is_model_dir`, `require_model_dir`); its tokenizer's chat template is in
  `chat_template.jinja`, `additional_chat_templates/` or `tokenizer_config.json`
  (`has_chat_template`, the places transformers' `AutoTokenizer` reads it from).
* `metrics.json` is what a trainer or an evaluation found; it is written whole or not at all
  (`write_metrics`: a temporary file renamed over it), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SAVED_BY_HF = "give a directory that save_pretrained wrote"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_model_dir(path: str | Path) -> bool:
    """Whether `path` is a Hugging Face model directory (it holds config.json)."""
    return (Path(path) / CONFIG_FILE).is_file()


def require_model_dir(
    path: str | Path, name: str, valid: str = SAVED_BY_HF, error: type[Exception] = ValueError
) -> Path:
    """`path` when it is a model directory; else `error` naming the field or flag (`name`), the path,
    and what would be valid."""
    if not is_model_dir(path):
        raise error(f"{name} {path} is not a Hugging Face model directory: it has no {CONFIG_FILE}; {valid}")
    return Path(path)


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in TOKENIZER_FILES)


def has_chat_template(path: str | Path) -> bool:
    """Whether the tokenizer saved in `path` has a chat template, found where AutoTokenizer looks."""
    p = Path(path)
    jinja = p / "chat_template.jinja"
    if jinja.is_file() and jinja.read_text(encoding="utf-8").strip():
        return True
    extra = p / "additional_chat_templates"
    if extra.is_dir() and any(extra.glob("*.jinja")):
        return True
    try:
        config = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def write_metrics(directory: str | Path, metrics: dict[str, Any]) -> Path:
    """Write `<directory>/metrics.json` atomically (values JSON does not know become strings)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    target = out / METRICS_FILE
    # Beside the target (a rename within one file system), named per process and thread.
    tmp = out / f".{METRICS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(metrics, indent=2, default=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_metrics(directory: str | Path) -> dict[str, Any] | None:
    """The `metrics.json` of a directory, or None when there is none."""
    target = Path(directory) / METRICS_FILE
    if not target.is_file():
        return None
    metrics = json.loads(target.read_text(encoding="utf-8"))
    if not isinstance(metrics, dict):
        raise ValueError(f"{target} holds {type(metrics).__name__}, not a JSON object of metrics")
    return metrics
