"""Preference data in and out: export rankings for TRL / HH-RLHF / as full rankings; import HH-RLHF.

    rankloop export --format trl --out prefs.jsonl     # prompt / chosen / rejected, every strict pair
    rankloop export --format hh  --out prefs.jsonl     # "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts, every turn
    rankloop export --format jsonl --out rankings.jsonl
    rankloop import hh hh.jsonl                        # prompts, samples and rankings by the `import` account

A prompt is a conversation: an HH transcript's every Human/Assistant turn before the last
answer becomes the prompt's conversation and the two final answers the candidates; exports
write the whole conversation back (TRL's conversational `prompt`, HH transcripts with every
turn), so import -> export -> import is lossless. An import file with any malformed row is
rejected whole, naming the lines; a row imported before (same content) is skipped, so
importing twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pyarrow as pa

from reward.conversation import Messages, conversation_key, from_row
from reward.data import pairwise_rows
from service.core.errors import UserError
from service.core.paths import write_atomic
from service.core.registry import register_model
from service.core.store import Store
from service.data.prompts import InputFileError, jsonl_rows, latest_system_prompts, read_text, reject

FORMATS = ("trl", "hh", "jsonl")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
IMPORT_ANNOTATOR = "import"
IMPORT_MODEL = "hh-import"


def _rankings(store: Store) -> list[dict]:
    rows = store.query(
        """SELECT r.id, r.task_id, r.ranks, r.flags, r.rationale, r.time_spent_s, r.created_at, a.name AS annotator,
                  p.text AS prompt, p.messages::VARCHAR AS messages, t.sample_ids
           FROM rankings r JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
           JOIN prompts p ON p.id = t.prompt_id WHERE NOT r.skipped ORDER BY r.task_id, a.name"""
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


def hh_transcript(messages: Messages, response: str) -> str:
    """Every turn of the conversation, then the answer, in HH-RLHF's transcript format."""
    turns = [*messages, {"role": "assistant", "content": response}]
    return "".join(f"{HUMAN if m['role'] == 'user' else ASSISTANT} {m['content']}" for m in turns)


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
                "candidates": [
                    {**c, "rank": rank} for c, rank in zip(r["candidates"], r["ranks"], strict=True)
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


_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh(transcript: str) -> tuple[Messages, str] | str:
    """(the conversation before the last answer, that answer), or what is wrong with the transcript."""
    parts = _TURN.split("\n\n" + transcript.lstrip("\n"))
    if parts[0].strip():
        return 'it must start with a "Human:" turn'
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if not turns or turns[-1]["role"] != "assistant":
        return f'it must end with an "{ASSISTANT.strip()}" turn'
    for i, t in enumerate(turns):
        if t["role"] != ("user" if i % 2 == 0 else "assistant"):
            return f"turn {i + 1} is {'Human' if t['role'] == 'user' else 'Assistant'} again: the turns must alternate"
        if not t["content"]:
            return f"turn {i + 1} is empty"
    return turns[:-1], turns[-1]["content"]


def read_hh(path: Path) -> list[dict]:
    """Validated rows of an HH-RLHF JSONL file: the conversation, chosen, rejected, and a content id."""
    problems: list[str] = []
    rows = []
    text = read_text(path)
    for n, row in jsonl_rows(text, problems):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
            problems.append(f'line {n}: expected an object with string fields "chosen" and "rejected"')
            continue
        chosen, rejected = parse_hh(row["chosen"]), parse_hh(row["rejected"])
        if isinstance(chosen, str) or isinstance(rejected, str):
            which, why = ("chosen", chosen) if isinstance(chosen, str) else ("rejected", rejected)
            problems.append(f"line {n}: the {which} transcript is not valid: {why}")
        elif chosen[0] != rejected[0]:
            problems.append(
                f"line {n}: chosen and rejected must share the conversation before the last answer"
            )
        elif chosen[1] == rejected[1]:
            problems.append(f"line {n}: chosen and rejected are the same answer, so there is no preference")
        else:
            content = json.dumps([row["chosen"], row["rejected"]])  # the row's identity: import it once
            rows.append(
                {
                    "messages": chosen[0],
                    "prompt": conversation_key(chosen[0]),
                    "chosen": chosen[1],
                    "rejected": rejected[1],
                    "id": hashlib.sha256(content.encode()).hexdigest()[:32],
                }
            )
    if problems:
        raise reject(path, problems, "nothing was imported")
    if not rows:
        raise InputFileError(
            f'{path}: holds no rows (expected JSONL with "chosen" and "rejected" transcripts)'
        )
    return rows


def import_hh(store: Store, path: Path, seed: int = 0, source_ref: str | None = None) -> tuple[int, int]:
    """Import validated HH rows as prompts, two samples, a two-candidate task and its ranking."""
    rows = read_hh(path)
    none_sp = latest_system_prompts(store, ["none"])[0]["id"]
    model_id = store.scalar("SELECT id FROM models WHERE kind = 'external' AND name = ?", [IMPORT_MODEL])
    if model_id is None:
        model_id = register_model(
            store,
            "external",
            Path(IMPORT_MODEL),
            name=IMPORT_MODEL,
            config={"source": "HH-RLHF-format import"},
        )
    rng = random.Random(seed)
    with store.write() as cur:  # one transaction, bulk inserts through Arrow
        annotator = cur.execute("SELECT id FROM annotators WHERE name = ?", [IMPORT_ANNOTATOR]).fetchone()
        annotator_id = (
            annotator[0]
            if annotator
            else cur.execute(
                "INSERT INTO annotators (name, role) VALUES (?, 'import') RETURNING id", [IMPORT_ANNOTATOR]
            ).fetchone()[0]
        )
        seen = {
            r[0]
            for r in cur.execute(
                "SELECT submission_id FROM rankings WHERE annotator_id = ?", [annotator_id]
            ).fetchall()
        }
        new = list({r["id"]: r for r in rows if f"hh:{r['id']}" not in seen}.values())
        if not new:
            return 0, len(rows)
        conversations = {r["prompt"]: r["messages"] for r in new}  # key -> the whole conversation
        texts = list(conversations)
        known = {
            t
            for (t,) in cur.execute(
                "SELECT text FROM prompts WHERE list_contains(?, text)", [texts]
            ).fetchall()
        }
        fresh = [t for t in texts if t not in known]
        store.insert_arrow(
            cur,
            "prompts",
            pa.table(
                {
                    "text": fresh,
                    "messages": [json.dumps(conversations[t]) for t in fresh],
                    "source": ["import"] * len(fresh),
                    "source_ref": [source_ref or str(path)] * len(fresh),
                }
            ),
        )
        prompt_id = dict(
            cur.execute("SELECT text, id FROM prompts WHERE list_contains(?, text)", [texts]).fetchall()
        )
        sample_ids = store.insert_arrow(
            cur,
            "samples",
            pa.table(
                {
                    "prompt_id": [prompt_id[r["prompt"]] for r in new for _ in (0, 1)],
                    "system_prompt_id": [none_sp] * (2 * len(new)),
                    "model_id": [model_id] * (2 * len(new)),
                    "params": ["{}"] * (2 * len(new)),
                    "params_hash": [f"import:{r['id'][:16]}" for r in new for _ in (0, 1)],
                    "sample_index": [i for _ in new for i in (0, 1)],
                    "text": [t for r in new for t in (r["chosen"], r["rejected"])],
                }
            ),
        )
        orders = [rng.sample([0, 1], 2) for _ in new]  # display order, shuffled as for sampled tasks
        task_ids = store.insert_arrow(
            cur,
            "tasks",
            pa.table(
                {
                    "prompt_id": [prompt_id[r["prompt"]] for r in new],
                    "sample_ids": pa.array(
                        [[sample_ids[2 * n + i] for i in order] for n, order in enumerate(orders)],
                        pa.list_(pa.int64()),
                    ),
                    "batch": ["import"] * len(new),
                }
            ),
        )
        store.insert_arrow(
            cur,
            "rankings",
            pa.table(
                {
                    "task_id": task_ids,
                    "annotator_id": [annotator_id] * len(new),
                    "ranks": pa.array(
                        [[1 if i == 0 else 2 for i in order] for order in orders], pa.list_(pa.int32())
                    ),
                    "flags": ["[]"] * len(new),
                    "submission_id": [f"hh:{r['id']}" for r in new],
                }
            ),
        )
    return len(new), len(rows) - len(new)
