"""Preference data in and out: export rankings for TRL / HH-RLHF / as full rankings; import HH-RLHF.

    rankloop export --format trl --out prefs.jsonl     # prompt / chosen / rejected, every strict pair
    rankloop export --format hh  --out prefs.jsonl     # "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts
    rankloop export --format jsonl --out rankings.jsonl
    rankloop import hh hh.jsonl                        # prompts, samples and rankings by the `import` account

An import file with any malformed row is rejected whole, naming the lines; a row
imported before (same content) is skipped, so importing twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa

from reward.data import pairwise_rows
from service.core.errors import StoreError
from service.core.paths import write_atomic
from service.core.registry import register_model
from service.core.store import Store
from service.loop.prompts import InputFileError, jsonl_rows, latest_system_prompts, read_text, reject

FORMATS = ("trl", "hh", "jsonl")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
IMPORT_ANNOTATOR = "import"
IMPORT_MODEL = "hh-import"


def _rankings(store: Store) -> list[dict]:
    rows = store.query(
        """SELECT r.id, r.task_id, r.ranks, r.flags, r.rationale, r.time_spent_s, r.created_at, a.name AS annotator,
                  p.text AS prompt, t.sample_ids
           FROM rankings r JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
           JOIN prompts p ON p.id = t.prompt_id WHERE NOT r.skipped ORDER BY r.task_id, a.name"""
    )
    ids = [s for r in rows for s in r["sample_ids"]]
    samples = {
        s["id"]: s
        for s in store.query(
            """SELECT s.id, s.text, sp.name AS system_prompt, sp.version AS system_prompt_version, m.name AS model
               FROM samples s JOIN system_prompts sp ON sp.id = s.system_prompt_id JOIN models m ON m.id = s.model_id
               WHERE list_contains(?, s.id)""", [ids or [-1]])
    }
    for r in rows:
        r["candidates"] = [samples[s] for s in r["sample_ids"]]
    return rows


def hh_transcript(prompt: str, response: str) -> str:
    return f"{HUMAN} {prompt}{ASSISTANT} {response}"


def export(store: Store, fmt: str, out: Path) -> int:
    """Write preference data; returns the number of rows written."""
    if fmt not in FORMATS:
        raise StoreError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    rankings = _rankings(store)
    if fmt == "jsonl":
        rows = [{"ranking_id": r["id"], "task_id": r["task_id"], "annotator": r["annotator"], "prompt": r["prompt"],
                 "flags": json.loads(r["flags"] or "[]"), "rationale": r["rationale"],
                 "time_spent_s": r["time_spent_s"], "created_at": r["created_at"].isoformat(),
                 "candidates": [{**c, "rank": rank} for c, rank in zip(r["candidates"], r["ranks"], strict=True)]}
                for r in rankings]
    else:
        # The same strict pairs the reward trainer uses, in TRL's conversational preference format.
        rows = pairwise_rows([{"prompt": r["prompt"], "texts": [c["text"] for c in r["candidates"]],
                               "ranks": r["ranks"]} for r in rankings])
        if fmt == "hh":
            rows = [{"chosen": hh_transcript(p["prompt"][0]["content"], p["chosen"][0]["content"]),
                     "rejected": hh_transcript(p["prompt"][0]["content"], p["rejected"][0]["content"])} for p in rows]
    write_atomic(Path(out), "".join(json.dumps(row) + "\n" for row in rows).encode())
    return len(rows)


def _split(transcript: str) -> tuple[str, str] | None:
    """(conversation before the last assistant turn, that turn's text)."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        return None
    return transcript[:cut], transcript[cut + len(ASSISTANT):].strip()


def _prompt_text(prefix: str) -> str:
    """A single human turn becomes its text; a longer conversation stays a transcript."""
    body = prefix.strip()
    if prefix.count(HUMAN) == 1 and ASSISTANT not in prefix and prefix.lstrip().startswith(HUMAN.strip()):
        return body[len(HUMAN.strip()):].strip()
    return body


def read_hh(path: Path) -> list[dict]:
    """Validated rows of an HH-RLHF JSONL file: prompt, chosen, rejected, and a content id."""
    problems: list[str] = []
    rows = []
    text = read_text(path)
    for n, row in jsonl_rows(text, problems):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
            problems.append(f'line {n}: expected an object with string fields "chosen" and "rejected"')
            continue
        chosen, rejected = _split(row["chosen"]), _split(row["rejected"])
        if chosen is None or rejected is None:
            problems.append(f'line {n}: each transcript must end with an "{ASSISTANT.strip()}" turn')
        elif chosen[0].strip() != rejected[0].strip():
            problems.append(f"line {n}: chosen and rejected must share the conversation before the last answer")
        elif not chosen[1] or not rejected[1]:
            problems.append(f"line {n}: an answer is empty")
        elif chosen[1] == rejected[1]:
            problems.append(f"line {n}: chosen and rejected are the same answer, so there is no preference")
        elif not _prompt_text(chosen[0]):
            problems.append(f"line {n}: the conversation before the answer is empty")
        else:
            content = json.dumps([row["chosen"], row["rejected"]])  # the row's identity: import it once
            rows.append({"prompt": _prompt_text(chosen[0]), "chosen": chosen[1], "rejected": rejected[1],
                         "id": hashlib.sha256(content.encode()).hexdigest()[:32]})
    if problems:
        raise reject(path, problems, "nothing was imported")
    if not rows:
        raise InputFileError(f'{path}: holds no rows (expected JSONL with "chosen" and "rejected" transcripts)')
    return rows


def import_hh(store: Store, path: Path, seed: int = 0, source_ref: str | None = None) -> tuple[int, int]:
    """Import validated HH rows as prompts, two samples, a two-candidate task and its ranking."""
    rows = read_hh(path)
    none_sp = latest_system_prompts(store, ["none"])[0]["id"]
    model_id = store.scalar("SELECT id FROM models WHERE kind = 'external' AND name = ?", [IMPORT_MODEL])
    if model_id is None:
        model_id = register_model(store, "external", Path(IMPORT_MODEL), name=IMPORT_MODEL,
                                  config={"source": "HH-RLHF-format import"})
    rng = random.Random(seed)
    with store.write() as cur:  # one transaction, bulk inserts through Arrow
        annotator = cur.execute("SELECT id FROM annotators WHERE name = ?", [IMPORT_ANNOTATOR]).fetchone()
        annotator_id = annotator[0] if annotator else cur.execute(
            "INSERT INTO annotators (name, role) VALUES (?, 'import') RETURNING id", [IMPORT_ANNOTATOR]).fetchone()[0]
        seen = {r[0] for r in cur.execute("SELECT submission_id FROM rankings WHERE annotator_id = ?",
                                          [annotator_id]).fetchall()}
        new = list({r["id"]: r for r in rows if f"hh:{r['id']}" not in seen}.values())
        if not new:
            return 0, len(rows)
        texts = list(dict.fromkeys(r["prompt"] for r in new))
        known = {t for (t,) in cur.execute("SELECT text FROM prompts WHERE list_contains(?, text)", [texts]).fetchall()}
        store.insert_arrow(cur, "prompts", pa.table({
            "text": [t for t in texts if t not in known], "source": ["import"] * (len(texts) - len(known)),
            "source_ref": [source_ref or str(path)] * (len(texts) - len(known))}))
        prompt_id = dict(cur.execute("SELECT text, id FROM prompts WHERE list_contains(?, text)", [texts]).fetchall())
        sample_ids = store.insert_arrow(cur, "samples", pa.table({
            "prompt_id": [prompt_id[r["prompt"]] for r in new for _ in (0, 1)],
            "system_prompt_id": [none_sp] * (2 * len(new)), "model_id": [model_id] * (2 * len(new)),
            "params": ["{}"] * (2 * len(new)), "params_hash": [f"import:{r['id'][:16]}" for r in new for _ in (0, 1)],
            "sample_index": [i for _ in new for i in (0, 1)],
            "text": [t for r in new for t in (r["chosen"], r["rejected"])]}))
        orders = [rng.sample([0, 1], 2) for _ in new]  # display order, shuffled as for sampled tasks
        task_ids = store.insert_arrow(cur, "tasks", pa.table({
            "prompt_id": [prompt_id[r["prompt"]] for r in new],
            "sample_ids": pa.array([[sample_ids[2 * n + i] for i in order] for n, order in enumerate(orders)],
                                   pa.list_(pa.int64())),
            "batch": ["import"] * len(new)}))
        store.insert_arrow(cur, "rankings", pa.table({
            "task_id": task_ids, "annotator_id": [annotator_id] * len(new),
            "ranks": pa.array([[1 if i == 0 else 2 for i in order] for order in orders], pa.list_(pa.int32())),
            "flags": ["[]"] * len(new), "submission_id": [f"hh:{r['id']}" for r in new]}))
    return len(new), len(rows) - len(new)
