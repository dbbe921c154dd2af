"""Snapshots: the immutable training data a reward or policy job reads instead of the database.

`rankloop snapshot [--exclude-flagged] [--min-gold-agreement X] [--exclude-annotator NAME ...]`
freezes the rankings that pass the filters, joined with their prompts, system prompts,
samples and annotators, into `<data>/snapshots/<id>/rankings.parquet` plus
`manifest.json` (filters, row counts, hash). One row per ranking, candidates as lists
in display order. The id is a hash of the content, so the same data gives the same
id. Each prompt goes to `train` or `eval` by a hash of its text, so no prompt is on
both sides, and the split is stable as data grows. For simulated annotators the
snapshot also carries each candidate's hidden utility: the ground truth evaluation
compares against.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from reward.data import split_of
from reward.snapshot_format import MANIFEST_FILE, SCHEMA, SNAPSHOT_FILE
from service.core.enums import PromptSource, Role
from service.core.errors import UserError
from service.core.paths import DataPaths
from service.core.store import Store


class SnapshotFilters(BaseModel):
    exclude_flagged: bool = Field(False, description="drop every ranking that flags a candidate")
    min_gold_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="drop rankings by annotators whose mean agreement with gold is below this "
        "(annotators with no gold answers are kept, and counted in the manifest)",
    )
    exclude_annotators: list[str] = Field(default_factory=list, description="drop these annotators' rankings")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="share of prompts held out for evaluation")
    include_judges: bool = Field(
        False, description="keep rankings by model judges (AI feedback) beside people's"
    )
    reviews: Literal["raw", "adjudicated", "both"] = Field(
        "adjudicated",
        description="contested tasks a reviewer resolved: raw (annotators' rankings only), adjudicated "
        "(the reviewer's final ranking instead of them) or both",
    )
    include_traffic: bool = Field(
        True,
        description="keep rankings from served traffic (clients' votes between "
        "answers, `POST /v1/feedback` with preferred_index)",
    )


# A key's clients vote as the account `traffic.KEYNAME` (`traffic:KEYNAME` in databases from before
# account names were checked): import accounts with these prefixes hold served traffic's rankings.
TRAFFIC_ANNOTATOR, LEGACY_TRAFFIC_ANNOTATOR = "traffic.", "traffic:"


def is_traffic_account(name: str, role: str) -> bool:
    return role == Role.IMPORT and name.startswith((TRAFFIC_ANNOTATOR, LEGACY_TRAFFIC_ANNOTATOR))


@dataclass(frozen=True)
class Snapshot:
    id: str
    path: Path  # the Parquet file
    manifest: dict
    created: bool  # False when identical data had been snapshotted before


_ROWS = """
WITH gold AS (SELECT annotator_id, avg(gold_agreement) AS gold_agreement FROM rankings
              WHERE gold_agreement IS NOT NULL GROUP BY annotator_id),
     cand AS (SELECT t.id AS task_id, u.sample_id, u.position
              FROM tasks t, unnest(t.sample_ids) WITH ORDINALITY AS u(sample_id, position)),
     src AS (SELECT id AS ranking_id, task_id, annotator_id, ranks, coalesce(flags, '[]')::VARCHAR AS flags,
                    strengths, attributes::VARCHAR AS attributes, guideline_id, false AS adjudicated
             FROM rankings WHERE NOT skipped
             UNION ALL
             SELECT NULL, task_id, reviewer_id, ranks, '[]', strengths, NULL, guideline_id, true
             FROM adjudications)
SELECT r.ranking_id, r.task_id, t.prompt_id, p.text AS prompt, p.source AS prompt_source,
       p.messages::VARCHAR AS messages, a.name AS annotator, a.role AS annotator_role,
       a.profile AS annotator_profile, g.gold_agreement AS annotator_gold_agreement, r.ranks,
       r.flags, t.batch, r.strengths, r.attributes, gl.version AS guideline_version, r.adjudicated,
       list(c.sample_id ORDER BY c.position) AS sample_ids,
       list(s.text ORDER BY c.position) AS texts,
       list(sp.name || ' v' || sp.version ORDER BY c.position) AS system_prompts,
       list(sp.text ORDER BY c.position) AS system_prompt_texts,
       list(m.name || ' #' || m.id ORDER BY c.position) AS models
FROM src r JOIN tasks t ON t.id = r.task_id JOIN prompts p ON p.id = t.prompt_id
JOIN annotators a ON a.id = r.annotator_id LEFT JOIN gold g ON g.annotator_id = a.id
LEFT JOIN guidelines gl ON gl.id = r.guideline_id
JOIN cand c ON c.task_id = t.id JOIN samples s ON s.id = c.sample_id
JOIN system_prompts sp ON sp.id = s.system_prompt_id JOIN models m ON m.id = s.model_id
GROUP BY ALL ORDER BY r.task_id, r.adjudicated, a.name
"""


def _hidden_utilities(row: dict) -> list[float] | None:
    """Ground truth for held-out rankings by reliable simulated annotators: their hidden utility of each
    candidate. None for training rows (a trainer never sees the truth it is measured against) and for an
    annotator who ranks at random (its rankings follow no utility)."""
    if row["split"] != "eval" or row["annotator_role"] != Role.SIMULATED or not row["annotator_profile"]:
        return None
    from annotator.simulated import Profile, utility

    profile = Profile.model_validate_json(row["annotator_profile"])
    if profile.unreliable or profile.gold_model:  # a gold model's truth is not computed here (no torch)
        return None
    pref = profile.preference
    return [
        utility(pref, text, sp) for text, sp in zip(row["texts"], row["system_prompt_texts"], strict=True)
    ]


def collect(store: Store, filters: SnapshotFilters) -> tuple[list[dict], dict]:
    """The rankings that pass the filters, and counts of what each filter dropped."""
    unknown = [
        n
        for n in filters.exclude_annotators
        if not store.scalar("SELECT count(*) FROM annotators WHERE name = ?", [n])
    ]
    if unknown:
        raise UserError(
            f"--exclude-annotator: no annotator named {', '.join(map(repr, unknown))}; "
            "`rankloop annotators list` shows them"
        )
    rows = store.query(_ROWS)
    dropped = {
        "flagged": 0,
        "gold_agreement": 0,
        "excluded_annotators": 0,
        "judges": 0,
        "traffic": 0,
        "adjudications": 0,
        "adjudicated_raw": 0,
    }
    reviewed = {r["task_id"] for r in rows if r["adjudicated"]}
    kept = []
    for r in rows:
        reason = _dropped_by(r, filters, reviewed)
        if reason is not None:
            dropped[reason] += 1
        else:
            # A prompt stored for evaluation is held out whatever its hash says (e.g. human-evaluation pairs).
            r["split"] = (
                "eval"
                if r.pop("prompt_source") == PromptSource.EVAL
                else split_of(r["prompt"], filters.eval_fraction)
            )
            r["hidden_utility"] = _hidden_utilities(r)
            kept.append(r)
    return kept, dropped


def _dropped_by(r: dict, filters: SnapshotFilters, reviewed: set[int]) -> str | None:
    """The filter that leaves this row out, or None to keep it."""
    if r["adjudicated"]:  # a reviewer's final ranking: the filters on annotators do not apply
        return "adjudications" if filters.reviews == "raw" else None
    if r["task_id"] in reviewed and filters.reviews == "adjudicated":
        return "adjudicated_raw"  # the reviewer's final ranking stands for these
    if r["annotator_role"] == Role.JUDGE and not filters.include_judges:
        return "judges"
    if is_traffic_account(r["annotator"], r["annotator_role"]) and not filters.include_traffic:
        return "traffic"
    if r["annotator"] in filters.exclude_annotators:
        return "excluded_annotators"
    if filters.exclude_flagged and json.loads(r["flags"]):
        return "flagged"
    gold = r["annotator_gold_agreement"]
    if filters.min_gold_agreement is not None and gold is not None and gold < filters.min_gold_agreement:
        return "gold_agreement"
    return None


def _add_task_agreement(rows: list[dict]) -> None:
    """Each ranking's task: mean pairwise agreement of its rankings here (None when ranked once)."""
    from itertools import combinations

    from annotator.agreement import pairwise_agreement

    by_task: dict[int, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task_id"], []).append(r)
    for task_rows in by_task.values():
        pairs = [pairwise_agreement(a["ranks"], b["ranks"]) for a, b in combinations(task_rows, 2)]
        for r in task_rows:
            r["task_agreement"] = sum(pairs) / len(pairs) if pairs else None


def content_hash(rows: list[dict]) -> str:
    """The snapshot's id: its content, not the order rankings arrived in (row ids are left out)."""
    canonical = json.dumps(
        [[r[f.name] for f in SCHEMA if f.name != "ranking_id"] for r in rows], sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def create_snapshot(store: Store, data_dir: Path, filters: SnapshotFilters) -> Snapshot:
    """Freeze the filtered rankings; returns the existing snapshot when the data is unchanged."""
    rows, dropped = collect(store, filters)
    _add_task_agreement(rows)
    if not rows:
        left_out = ", ".join(f"{n} by {why}" for why, n in dropped.items() if n)
        raise UserError(
            "no rankings pass the filters, so there is nothing to snapshot"
            + (f" (left out: {left_out})" if left_out else "")
            + "; rank some tasks first "
            "(`rankloop annotate-sim` or the app) or loosen the filters"
        )
    snap_id = content_hash(rows)
    folder = DataPaths(data_dir).snapshot_dir(snap_id)
    existing = store.scalar("SELECT path FROM snapshots WHERE id = ?", [snap_id])
    if existing and Path(existing).exists():
        return Snapshot(
            snap_id, Path(existing), json.loads((folder / MANIFEST_FILE).read_text()), created=False
        )
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "eval")}
    manifest = {
        "id": snap_id,
        "filters": filters.model_dump(),
        "counts": {
            "rankings": len(rows),
            "train_rankings": len(splits["train"]),
            "eval_rankings": len(splits["eval"]),
            "prompts": len({r["prompt_id"] for r in rows}),
            "train_prompts": len({r["prompt_id"] for r in splits["train"]}),
            "eval_prompts": len({r["prompt_id"] for r in splits["eval"]}),
            "tasks": len({r["task_id"] for r in rows}),
            "annotators": len({r["annotator"] for r in rows}),
            "without_gold_data": sum(r["annotator_gold_agreement"] is None for r in rows),
            "dropped": dropped,
        },
    }
    # Written whole beside its final place, recorded, then moved in: a crash leaves either a
    # hidden partial folder (removed by the next snapshot) or a row whose folder is missing (rewritten
    # the next time the same data is snapshotted, as above), never a folder nothing knows about.
    partial = folder.parent / f".{snap_id}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), partial / SNAPSHOT_FILE)
    (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    with store.write() as cur:
        cur.execute(
            "INSERT OR REPLACE INTO snapshots (id, path, filters, counts) VALUES (?, ?, ?, ?)",
            [
                snap_id,
                str(folder / SNAPSHOT_FILE),
                json.dumps(manifest["filters"]),
                json.dumps(manifest["counts"]),
            ],
        )
    shutil.rmtree(folder, ignore_errors=True)  # a folder left by a crash after an earlier commit
    partial.rename(folder)
    return Snapshot(snap_id, folder / SNAPSHOT_FILE, manifest, created=True)


def latest_snapshot(store: Store) -> str | None:
    return store.scalar("SELECT path FROM snapshots ORDER BY created_at DESC LIMIT 1")
