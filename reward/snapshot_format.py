"""The snapshot format, kept once on the reader's side (the service's writer imports it).

A snapshot is a folder `<id>/` holding `rankings.parquet` (one row per ranking, columns
below, candidates as lists in display order) and `manifest.json` (id, filters, counts).
The train/eval split is `reward.data.split_of`, a function of the prompt's text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

SNAPSHOT_FILE = "rankings.parquet"
MANIFEST_FILE = "manifest.json"

SCHEMA = pa.schema(
    [
        ("ranking_id", pa.int64()),
        ("task_id", pa.int64()),
        ("prompt_id", pa.int64()),
        ("prompt", pa.string()),
        ("split", pa.string()),
        ("annotator", pa.string()),
        ("annotator_role", pa.string()),
        ("annotator_profile", pa.string()),
        ("annotator_gold_agreement", pa.float64()),
        ("batch", pa.string()),
        ("ranks", pa.list_(pa.int32())),
        ("flags", pa.string()),
        ("sample_ids", pa.list_(pa.int64())),
        ("texts", pa.list_(pa.string())),
        ("system_prompts", pa.list_(pa.string())),
        ("system_prompt_texts", pa.list_(pa.string())),
        ("models", pa.list_(pa.string())),
        ("hidden_utility", pa.list_(pa.float64())),
        ("task_agreement", pa.float64()),
        ("messages", pa.string()),  # the conversation as JSON (`reward.conversation`); `prompt` is its key
        # How much each rank level beats the next (reward/strength.py), per-candidate attribute ratings
        # (JSON list), the guideline version it was ranked under, and whether it is a reviewer's final
        # ranking of a contested task rather than an annotator's.
        ("strengths", pa.list_(pa.string())),
        ("attributes", pa.string()),
        ("guideline_version", pa.int32()),
        ("adjudicated", pa.bool_()),
    ]
)


def snapshot_file(path: str | Path) -> Path:
    """The Parquet file of a snapshot given as its folder or the file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / SNAPSHOT_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"no snapshot at {path}: expected {SNAPSHOT_FILE} (`rankloop snapshot` writes one)"
        )
    return p


def read_manifest(path: str | Path) -> dict | None:
    """The manifest beside a snapshot (given as its folder or its file), or None."""
    p = Path(path)
    manifest = (p if p.is_dir() else p.parent) / MANIFEST_FILE
    return json.loads(manifest.read_text()) if manifest.exists() else None


def snapshot_id(path: str | Path) -> str | None:
    """The id (content hash) in a snapshot's manifest, or None when it has no manifest."""
    manifest = read_manifest(path)
    return manifest["id"] if manifest else None
