"""Preference data in and out: export rankings for TRL / HH-RLHF / as full rankings; import HH-RLHF.

    rankloop export --format trl --out prefs.jsonl     # prompt / chosen / rejected, every strict pair
    rankloop export --format hh  --out prefs.jsonl     # "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts, every turn
    rankloop export --format jsonl --out rankings.jsonl
    rankloop import hh hh.jsonl                        # prompts, samples and rankings by the `import` account

A prompt is a conversation: an HH transcript's every Human/Assistant turn before the last
answer becomes the prompt's conversation and the two final answers the candidates; exports
write the whole conversation back (TRL's conversational `prompt`, HH transcripts with every
turn), so import -> export -> import is lossless. An HH import skips the lines it cannot read and
names each with its reason (service/data/hh.py; `--strict` rejects the file whole instead); a row
imported before (same content) is not stored again, so importing twice adds nothing. Imports write prompts, tasks and rankings through the same
functions as everything else (`import_rankings`), so a ranking is checked as a submit is.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from annotator.queue import account_id, record_rankings, stored_submissions
from annotator.ranking import RankingError, Submission, normalize_ranks
from reward.conversation import Messages, conversation_key, from_row
from reward.data import pairwise_rows
from service.core.enums import ModelKind, PromptSource, Role
from service.core.errors import UserError
from service.core.paths import write_atomic
from service.core.registry import register_model
from service.core.store import Store
from service.data.hh import hh_transcript, read_hh
from service.data.prompts import insert_prompts, no_system_prompt_id, reject
from service.data.tasks import insert_tasks

FORMATS = ("trl", "hh", "jsonl")
IMPORT_ANNOTATOR = "import"
IMPORT_MODEL = "hh-import"


def _rankings(store: Store) -> list[dict]:
    rows = store.query(
        """SELECT r.id, r.task_id, r.ranks, r.flags, r.rationale, r.time_spent_s, r.created_at, a.name AS annotator,
                  p.text AS prompt, p.messages::VARCHAR AS messages, t.sample_ids, r.strengths,
                  r.attributes::VARCHAR AS attributes, g.batch AS guideline_batch, g.version AS guideline_version
           FROM rankings r JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
           JOIN prompts p ON p.id = t.prompt_id LEFT JOIN guidelines g ON g.id = r.guideline_id
           WHERE NOT r.skipped ORDER BY r.task_id, a.name"""
    )
    ids = [s for r in rows for s in r["sample_ids"]]
    samples = {
        s["id"]: s
        for s in store.query(
            """SELECT s.id, s.text, sp.name AS system_prompt, sp.version AS system_prompt_version, m.name AS model
               FROM samples s JOIN system_prompts sp ON sp.id = s.system_prompt_id JOIN models m ON m.id = s.model_id
               WHERE list_contains(?, s.id)""",
            [ids or [-1]],
        )
    }
    for r in rows:
        r["candidates"] = [samples[s] for s in r["sample_ids"]]
    return rows


def export(store: Store, fmt: str, out: Path) -> int:
    """Write preference data; returns the number of rows written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    rankings = _rankings(store)
    if fmt == "jsonl":
        rows = [
            {
                "ranking_id": r["id"],
                "task_id": r["task_id"],
                "annotator": r["annotator"],
                "prompt": r["prompt"],
                "messages": from_row(r["prompt"], r["messages"]),
                "flags": json.loads(r["flags"] or "[]"),
                "rationale": r["rationale"],
                "time_spent_s": r["time_spent_s"],
                "created_at": r["created_at"].isoformat(),
                "guideline": None
                if r["guideline_version"] is None
                else {"batch": r["guideline_batch"] or None, "version": r["guideline_version"]},
                "strengths": r["strengths"],
                "candidates": [
                    {**c, "rank": rank, "attributes": rated}
                    for c, rank, rated in zip(
                        r["candidates"],
                        r["ranks"],
                        json.loads(r["attributes"]) if r["attributes"] else [None] * len(r["ranks"]),
                        strict=True,
                    )
                ],
            }
            for r in rankings
        ]
    else:
        # The same strict pairs the reward trainer uses, in TRL's conversational preference format.
        rows = pairwise_rows(
            [
                {
                    "prompt": r["prompt"],
                    "messages": r["messages"],
                    "texts": [c["text"] for c in r["candidates"]],
                    "ranks": r["ranks"],
                    "strengths": r["strengths"],
                }
                for r in rankings
            ]
        )
        if fmt == "hh":
            rows = [
                {
                    "chosen": hh_transcript(p["prompt"], p["chosen"][0]["content"]),
                    "rejected": hh_transcript(p["prompt"], p["rejected"][0]["content"]),
                }
                for p in rows
            ]
    write_atomic(Path(out), "".join(json.dumps(row) + "\n" for row in rows).encode())
    return len(rows)


@dataclass(frozen=True)
class ImportedRanking:
    """One ranking from outside rankloop: a conversation, its candidate answers, their ranks (1 =
    best, as a submit gives them), and the content id that makes importing it again a no-op."""

    messages: Messages
    texts: list[str]
    ranks: list[int]
    content_id: str
    line: int | None = None  # where the file has it, for messages


def import_hh(
    store: Store,
    path: Path,
    seed: int = 0,
    source_ref: str | None = None,
    strict: bool = False,
    batch: str = "import",
) -> dict:
    """Import an HH file's readable rows (service/data/hh.py), each a two-candidate task (chosen ranked
    first) and its ranking: how many were added and already there, the lines skipped, the rows repaired."""
    found = read_hh(path, strict)
    rows = [
        ImportedRanking(r["messages"], [r["chosen"], r["rejected"]], [1, 2], r["id"], r["line"])
        for r in found.rows
    ]
    added, already = import_rankings(
        store, rows, path, seed=seed, source_ref=source_ref, prefix="hh", batch=batch
    )
    return {"added": added, "already": already, "skipped": found.skipped, "repaired": found.repaired}


def import_rankings(
    store: Store,
    rows: list[ImportedRanking],
    path: Path,
    *,
    seed: int = 0,
    source_ref: str | None = None,
    prefix: str = "import",
    batch: str = "import",
) -> tuple[int, int]:
    """Store imported rankings by the paths everything else takes: prompts by `insert_prompts`,
    candidates as samples of the external model `hh-import`, tasks (display order shuffled, as for
    sampled tasks) by `insert_tasks`, and the rankings by the `import` account through the queue's
    `record_rankings`, so they are checked as a submit is. All in one transaction; a row with a
    ranking a submit would refuse rejects the file whole. Returns (added, already imported)."""
    problems = []
    for n, r in enumerate(rows, 1):
        try:
            normalize_ranks(r.ranks, len(r.texts))  # the check record_rankings repeats, before any write
        except RankingError as e:
            problems.append(f"line {r.line or n}: {e}")
    if problems:
        raise reject(path, problems, "nothing was imported")
    model_id = store.scalar(
        "SELECT id FROM models WHERE kind = ? AND name = ?", [ModelKind.EXTERNAL, IMPORT_MODEL]
    )
    if model_id is None:
        model_id = register_model(
            store,
            ModelKind.EXTERNAL,
            Path(IMPORT_MODEL),
            name=IMPORT_MODEL,
            config={"source": "HH-RLHF-format import"},
        )
    annotator_id = account_id(store, IMPORT_ANNOTATOR, Role.IMPORT)
    rng = random.Random(seed)
    with store.write() as cur:  # one transaction, bulk inserts through Arrow
        unique = {f"{prefix}:{r.content_id}": r for r in rows}
        seen = stored_submissions(cur, list(unique))
        new = [(sid, r) for sid, r in unique.items() if sid not in seen]
        if not new:
            return 0, len(rows)
        prompt_ids, _ = insert_prompts(
            cur, [r.messages for _, r in new], PromptSource.IMPORT, source_ref or str(path)
        )
        none_sp = no_system_prompt_id(cur)
        sample_ids = store.insert_arrow(
            cur,
            "samples",
            pa.table(
                {
                    "prompt_id": [prompt_ids[conversation_key(r.messages)] for _, r in new for _ in r.texts],
                    "system_prompt_id": [none_sp for _, r in new for _ in r.texts],
                    "model_id": [model_id for _, r in new for _ in r.texts],
                    "params": ["{}" for _, r in new for _ in r.texts],
                    "params_hash": [f"import:{r.content_id[:16]}" for _, r in new for _ in r.texts],
                    "sample_index": [i for _, r in new for i in range(len(r.texts))],
                    "text": [t for _, r in new for t in r.texts],
                }
            ),
        )
        tasks, rankings, at = [], [], 0
        for sid, r in new:
            order = rng.sample(range(len(r.texts)), len(r.texts))  # display order
            tasks.append(
                {
                    "prompt_id": prompt_ids[conversation_key(r.messages)],
                    "sample_ids": [sample_ids[at + i] for i in order],
                }
            )
            rankings.append((sid, [r.ranks[i] for i in order]))
            at += len(r.texts)
        task_ids = insert_tasks(store, cur, tasks, 1, batch)
        record_rankings(
            cur,
            [
                (annotator_id, Submission(task_id=tid, submission_id=sid, ranks=ranks))
                for tid, (sid, ranks) in zip(task_ids, rankings, strict=True)
            ],
        )
    return len(new), len(rows) - len(new)
