"""A prompt is a conversation: user and assistant turns (OpenAI chat format), ending with a user
turn. A plain-text prompt is the one-message conversation. System prompts are never part of it:
they are the service's versioned arms, put first only when sampling.

    check_messages([{"role": "user", "content": "Hi"}])      # [] (no problems)
    conversation_key(messages)    # the stored, deduplicated identity (plain text for one message)
    render_plain(messages)        # "User: ...\n\nAssistant: ...": for checkpoints without a chat template

Kept in `reward/` (the data format's reader side) so trainers, scoring and the service share it.
"""

from __future__ import annotations

import json
import re
from typing import Any

ROLES = ("user", "assistant")
MAX_CONTENT_CHARS = 32_000
Messages = list[dict[str, str]]


def check_messages(messages: Any, where: str = "messages") -> list[str]:
    """Every problem with a conversation, each naming the turn and what would be valid."""
    if not isinstance(messages, list) or not messages:
        return [f'{where}: expected a non-empty list of {{"role", "content"}} messages']
    problems = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(m, dict) or set(m) - {"role", "content", "name"}:
            problems.append(f'{at}: expected an object with "role" and "content"')
            continue
        role, content = m.get("role"), m.get("content")
        if role == "system":
            problems.append(
                f"{at}: a system turn is not part of a prompt; system prompts are the versioned arms "
                "(`rankloop system-prompts add`)"
            )
        elif role not in ROLES:
            problems.append(f"{at}: unknown role {role!r}; valid: user, assistant")
        elif role != ROLES[i % 2]:
            problems.append(
                f"{at}: role {role!r} out of turn; a conversation alternates user, assistant, user, ..."
            )
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{at}: content must be non-empty text")
        elif len(content) > MAX_CONTENT_CHARS:
            problems.append(
                f"{at}: content has {len(content)} characters, at most {MAX_CONTENT_CHARS} allowed"
            )
    if not problems and messages[-1]["role"] != "user":
        problems.append(
            f"{where}: the conversation must end with a user turn (the one the candidates answer)"
        )
    return problems


def normalized(messages: Messages) -> Messages:
    """Only role and stripped content: the form that is stored and compared."""
    return [{"role": m["role"], "content": m["content"].strip()} for m in messages]


def conversation_key(messages: Messages) -> str:
    """The prompt's stored identity: the text itself for one user message (as before conversations),
    else the canonical JSON of every turn, so deduplication is on the whole conversation."""
    if len(messages) == 1:
        return messages[0]["content"]
    return json.dumps(normalized(messages), ensure_ascii=False, separators=(",", ":"))


_LEADING_NUMBER = re.compile(r"^\s*(\d+[.):]|[#(\[]\s*\d+[)\]]?)\s+")
_TRAILING_NUMBER = re.compile(r"(\s*([#(\[]\s*[\w-]*\d[\w-]*[)\]]?|\d+[.)]?))+\s*$")


def split_key(prompt: str) -> str:
    """What decides which side of a train/eval split a prompt falls on: the conversation's opening (its
    first user message, so the follow-ups of one opening stay together) with case, whitespace,
    punctuation and numbering before or after it ("#0-3", "(2)", "3.") taken away, so near-duplicates
    such as "What is a cat?" and "what is a cat #0-3" land on the same side. Grouping too much only
    unbalances the split; grouping too little would leak held-out prompts into training."""
    opening = prompt
    if prompt.startswith("["):  # a conversation's canonical JSON (conversation_key)
        try:
            opening = next(m["content"] for m in json.loads(prompt) if m["role"] == "user")
        except (ValueError, TypeError, KeyError, StopIteration):
            pass
    text = _TRAILING_NUMBER.sub("", _LEADING_NUMBER.sub("", opening.lower()))
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split()) or opening.strip().lower()


def from_row(prompt: str, messages: str | list | None) -> Messages:
    """A stored or snapshotted prompt's conversation (rows from before conversations have text only)."""
    if messages:
        return json.loads(messages) if isinstance(messages, str) else list(messages)
    return [{"role": "user", "content": prompt}]


def last_user_turn(messages: Messages) -> str:
    return messages[-1]["content"]


def render_plain(messages: Messages, response: str | None = None) -> str:
    """The conversation as text, for a checkpoint without a chat template: a single user turn is
    the prompt itself; several turns are "User: ..." / "Assistant: ..." paragraphs."""
    turns = list(messages) + ([{"role": "assistant", "content": response}] if response is not None else [])
    if len(messages) == 1:
        return turns[0]["content"] + (f"\n\n{response}" if response is not None else "")
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)
