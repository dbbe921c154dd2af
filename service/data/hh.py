"""HH-RLHF's transcript format ("\\n\\nHuman: ...\\n\\nAssistant: ..."): write one, read a file of
chosen/rejected pairs.

Real HH files have rows that break the format's own rule that the turns alternate: in Anthropic's
`harmless-base` test split, 10 of 1,816 lines have an empty turn or two Assistant turns in a row
(one speaker's message cut in two). Reading them the way HH's own users do keeps their meaning: turns
of one speaker in a row are one message (joined by a blank line) and an empty turn before the last
answer is dropped. What cannot be read that way (no Human opening, no final answer, an empty final
answer, two sides that do not share the conversation) is skipped with its line and reason. `strict`
is the format read literally: any such row rejects the file whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from reward.conversation import Messages, conversation_key
from service.data.prompts import InputFileError, jsonl_rows, read_text, reject

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_transcript(messages: Messages, response: str) -> str:
    """Every turn of the conversation, then the answer, in HH-RLHF's transcript format."""
    turns = [*messages, {"role": "assistant", "content": response}]
    return "".join(f"{HUMAN if m['role'] == 'user' else ASSISTANT} {m['content']}" for m in turns)


@dataclass(frozen=True)
class Parsed:
    messages: Messages  # the conversation before the last answer
    answer: str
    repaired: bool  # turns of one speaker were joined or an empty turn dropped


def parse_hh(transcript: str, strict: bool = False) -> Parsed | str:
    """The conversation and its last answer, or what is wrong with the transcript."""
    parts = _TURN.split("\n\n" + transcript.lstrip("\n"))
    if parts[0].strip():
        return 'it must start with a "Human:" turn'
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if not turns or turns[-1]["role"] != "assistant":
        return f'it must end with an "{ASSISTANT.strip()}" turn'
    if not turns[-1]["content"]:
        return "its last answer is empty"
    merged: list[dict[str, str]] = []
    for i, t in enumerate(turns):
        if strict and t["role"] != ("user" if i % 2 == 0 else "assistant"):
            return f"turn {i + 1} is {'Human' if t['role'] == 'user' else 'Assistant'} again: the turns must alternate"
        if strict and not t["content"]:
            return f"turn {i + 1} is empty"
        if not t["content"]:
            continue
        if merged and merged[-1]["role"] == t["role"]:
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + t["content"]}
        else:
            merged.append(t)
    if merged[0]["role"] != "user":
        return 'its first message is not a "Human:" turn'
    return Parsed(merged[:-1], merged[-1]["content"], len(merged) != len(turns))


@dataclass
class HHFile:
    """What `read_hh` found: the rows to import, the lines it skipped and why, how many it repaired."""

    rows: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "line N: why"
    repaired: int = 0


def _row(n: int, row: object, strict: bool) -> dict | str:
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("chosen", "rejected")):
        return 'expected an object with string fields "chosen" and "rejected"'
    chosen, rejected = parse_hh(row["chosen"], strict), parse_hh(row["rejected"], strict)
    if isinstance(chosen, str) or isinstance(rejected, str):
        which, why = ("chosen", chosen) if isinstance(chosen, str) else ("rejected", rejected)
        return f"the {which} transcript is not valid: {why}"
    if chosen.messages != rejected.messages:
        return "chosen and rejected must share the conversation before the last answer"
    if chosen.answer == rejected.answer:
        return "chosen and rejected are the same answer, so there is no preference"
    content = json.dumps([row["chosen"], row["rejected"]])  # the row's identity: import it once
    return {
        "messages": chosen.messages,
        "prompt": conversation_key(chosen.messages),
        "chosen": chosen.answer,
        "rejected": rejected.answer,
        "id": hashlib.sha256(content.encode()).hexdigest()[:32],
        "line": n,
        "repaired": chosen.repaired or rejected.repaired,
    }


def read_hh(path: Path, strict: bool = False) -> HHFile:
    """The rows of an HH-RLHF JSONL file (gzip-compressed or not). Unreadable lines are skipped with their
    reasons; with `strict`, any of them rejects the file whole. A file with no row to import is refused."""
    problems: list[str] = []
    found = HHFile()
    for n, row in jsonl_rows(read_text(path), problems):
        got = _row(n, row, strict)
        if isinstance(got, str):
            problems.append(f"line {n}: {got}")
        else:
            found.rows.append(got)
            found.repaired += got["repaired"]
    if problems and (strict or not found.rows):
        raise reject(path, problems, "nothing was imported")
    if not found.rows:
        raise InputFileError(
            f'{path}: holds no rows (expected JSONL with "chosen" and "rejected" transcripts)'
        )
    found.skipped = problems
    return found
