"""Prompts and versioned system prompts: reading them from files and storing them.

Prompt files are JSONL (a `prompt` field, or `messages`: a conversation in OpenAI chat
format, per line), CSV (a `prompt` column) or plain text (one prompt per line). A prompt
is stored as its conversation; see `reward.conversation`. System prompt files are YAML mappings name -> text;
adding a name again with new text makes a new version and never overwrites.
A file with any bad row is rejected whole, with every bad line named, before
anything is written. Every prompt is stored by `insert_prompts` (seed files, imports, served
traffic, clients' votes, held-out evaluation prompts), the reserved empty system prompt by
`no_system_prompt_id`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from reward.conversation import Messages, check_messages, conversation_key, normalized
from service.core.enums import PromptSource
from service.core.errors import UserError
from service.core.store import Store, registered

MAX_PROMPT_CHARS = 32_000
MAX_REPORTED = 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Sampling with `--system-prompt none` uses this reserved, empty system prompt (no system message).
NO_SYSTEM_PROMPT = "none"


class InputFileError(UserError):
    """A file rejected whole; the message lists what is wrong on which line."""


def reject(path: Path, problems: list[str], nothing: str = "nothing was added") -> InputFileError:
    """The error for a file rejected whole: every problem (up to MAX_REPORTED) on its own line."""
    shown = problems[:MAX_REPORTED]
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    return InputFileError(f"{path}: rejected, {nothing}:\n  " + "\n  ".join(shown) + more)


def read_text(path: Path) -> str:
    """A file's UTF-8 text; a gzip-compressed one (told by its first bytes, not its name: an upload has
    none) is read decompressed, as data sets are shipped."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputFileError(f"{path}: starts as gzip but does not decompress ({e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: not UTF-8 text, plain or gzip-compressed ({e})") from None


def jsonl_rows(raw: str, problems: list[str]) -> Iterator[tuple[int, object]]:
    """(line number, value) of every non-blank JSONL line; lines that are not JSON go to `problems`."""
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: not valid JSON ({e.msg})")


def _check_text(value: object, where: str, problems: list[str]) -> str | None:
    if not isinstance(value, str):
        problems.append(f"{where}: prompt must be a string, got {type(value).__name__}")
    elif not value.strip():
        problems.append(f"{where}: prompt is empty")
    elif len(value) > MAX_PROMPT_CHARS:
        problems.append(f"{where}: prompt has {len(value)} characters, at most {MAX_PROMPT_CHARS} allowed")
    else:
        return value.strip()
    return None


def read_prompt_file(path: str | Path) -> list[Messages]:
    """The conversations in a .jsonl, .csv or plain-text file; raises InputFileError naming bad lines."""
    path = Path(path)
    raw = read_text(path)
    problems: list[str] = []
    prompts: list[Messages] = []

    def one_message(value: object, where: str) -> None:
        text = _check_text(value, where, problems)
        prompts.extend([[{"role": "user", "content": text}]] if text else [])

    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for n, row in jsonl_rows(raw, problems):
            if isinstance(row, dict) and "messages" in row:
                found = check_messages(row["messages"], f"line {n}: messages")
                problems.extend(found)
                prompts.extend([] if found else [normalized(row["messages"])])
            elif isinstance(row, dict) and "prompt" in row:
                one_message(row["prompt"], f"line {n}")
            else:
                problems.append(f'line {n}: expected an object with a "prompt" or a "messages" field')
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise InputFileError(
                f'{path}: a CSV needs a header row with a "prompt" column; '
                f"found columns {reader.fieldnames or []}"
            )
        for row in reader:
            one_message(row["prompt"] or "", f"line {reader.line_num}")
    else:
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                one_message(line, f"line {n}")
    if problems:
        raise reject(path, problems)
    if not prompts:
        raise InputFileError(
            f'{path}: holds no prompts (expected JSONL with a "prompt" or "messages" field, '
            'CSV with a "prompt" column, or one prompt per line)'
        )
    return prompts


def add_prompts(
    store: Store,
    prompts: Sequence[Messages | str],
    source: str = PromptSource.SEED,
    source_ref: str | None = None,
) -> tuple[int, int]:
    """Store new conversations (a string is a one-message one); a conversation already stored is
    skipped. Returns (added, skipped)."""
    with store.write() as cur:
        _, added = insert_prompts(cur, prompts, source, source_ref)
    return added, len(prompts) - added


def insert_prompts(
    cur: duckdb.DuckDBPyConnection,
    prompts: Sequence[Messages | str],
    source: str = PromptSource.SEED,
    source_ref: str | None = None,
) -> tuple[dict[str, int], int]:
    """The one INSERT of prompts, in the caller's transaction: new conversations are stored with
    their `source` (a PromptSource), stored ones are kept as they are. Returns (conversation key ->
    prompt id for every conversation given, how many were new)."""
    if source not in set(PromptSource):
        raise UserError(f"unknown prompt source {source!r}; valid: {', '.join(PromptSource)}")
    convs = [[{"role": "user", "content": p}] if isinstance(p, str) else normalized(p) for p in prompts]
    unique = {conversation_key(c): c for c in convs}
    if not unique:
        return {}, 0
    new = pa.table({"text": list(unique), "messages": [json.dumps(c) for c in unique.values()]})
    with registered(cur, "_new_prompts", new):
        added = cur.execute(
            """INSERT INTO prompts (text, messages, source, source_ref)
               SELECT n.text, n.messages::JSON, ?, ? FROM _new_prompts n
               WHERE n.text NOT IN (SELECT text FROM prompts) RETURNING id""",
            [str(source), source_ref],
        ).fetchall()
        ids = dict(
            cur.execute(
                "SELECT p.text, p.id FROM prompts p JOIN _new_prompts n ON n.text = p.text"
            ).fetchall()
        )
    return ids, len(added)


def read_system_prompt_file(path: str | Path) -> dict[str, str]:
    """name -> text from a YAML mapping; raises InputFileError naming each bad entry."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputFileError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or not data:
        raise InputFileError(f"{path}: expected a non-empty YAML mapping of name: text")
    problems = []
    for name, text in data.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(f"{name!r}: a name is 1-64 letters, digits, '_', '.', '-' (starting alnum)")
        elif name == NO_SYSTEM_PROMPT:
            problems.append(f"{name!r}: reserved for sampling without a system prompt")
        elif not isinstance(text, str) or not text.strip():
            problems.append(f"{name!r}: text must be a non-empty string")
    if problems:
        raise reject(path, problems)
    return {name: text.strip() for name, text in data.items()}


def add_system_prompts(store: Store, prompts: dict[str, str]) -> list[dict]:
    """Add each as a new version unless its latest version has the same text."""
    report = []
    with store.write() as cur:
        for name, text in prompts.items():
            row = cur.execute(
                "SELECT version, text FROM system_prompts WHERE name = ? ORDER BY version DESC LIMIT 1",
                [name],
            ).fetchone()
            if row and row[1] == text:
                report.append({"name": name, "version": row[0], "change": "unchanged"})
                continue
            version = row[0] + 1 if row else 1
            cur.execute(
                "INSERT INTO system_prompts (name, version, text) VALUES (?, ?, ?)", [name, version, text]
            )
            report.append({"name": name, "version": version, "change": "new version" if row else "added"})
    return report


def latest_system_prompts(store: Store, names: list[str] | None = None) -> list[dict]:
    """The latest version of each named system prompt (all names when None), in the order given."""
    rows = store.query(
        """SELECT id, name, version, text FROM system_prompts s
           WHERE version = (SELECT max(version) FROM system_prompts WHERE name = s.name) ORDER BY name"""
    )
    by_name = {r["name"]: r for r in rows}
    if names is None:
        return [r for r in rows if r["name"] != NO_SYSTEM_PROMPT]
    unknown = [n for n in names if n not in by_name and n != NO_SYSTEM_PROMPT]
    if unknown:
        valid = ", ".join(n for n in by_name if n != NO_SYSTEM_PROMPT) or "(none stored yet)"
        raise UserError(
            f"unknown system prompt {', '.join(map(repr, unknown))}; stored: {valid}; "
            f"or '{NO_SYSTEM_PROMPT}' for no system prompt"
        )
    if NO_SYSTEM_PROMPT in names and NO_SYSTEM_PROMPT not in by_name:
        with store.write() as cur:
            no_system_prompt_id(cur)
        return latest_system_prompts(store, names)
    return [by_name[n] for n in dict.fromkeys(names)]


def no_system_prompt_id(cur: duckdb.DuckDBPyConnection) -> int:
    """The id of the reserved empty system prompt (`none`), stored in the caller's transaction when
    it is not yet."""
    row = cur.execute(
        "SELECT id FROM system_prompts WHERE name = ? ORDER BY version DESC LIMIT 1", [NO_SYSTEM_PROMPT]
    ).fetchone()
    if row is not None:
        return row[0]
    made = cur.execute(
        "INSERT INTO system_prompts (name, version, text) VALUES (?, 1, '') RETURNING id", [NO_SYSTEM_PROMPT]
    ).fetchone()
    assert made is not None  # RETURNING gives the inserted row
    return made[0]
