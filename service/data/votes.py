"""Clients' votes into the data: a vote between the choices of one served response becomes a prompt,
the choices as samples, a task and its ranking, all stored by the functions everything else uses
(`insert_prompts`, `insert_tasks`, the queue's `record_rankings`), so a vote is checked and stored as
a submit is: ranks dense, its submission id `traffic:RESPONSE_ID` idempotent.

The gateway (service/gateway/feedback.py) reads the vote from its traffic log and calls, in order:

    annotator_id = vote_account(store, vote)       # refusals first, then the key's account
    with store.write() as cur:
        ranking_id = store_vote(store, cur, vote, annotator_id)
        ...                                          # the feedback row, in the same transaction

Each key's clients vote as one account: `traffic.KEYNAME` (made by `annotator.accounts`, whose
names allow no ':'), or the `traffic:KEYNAME` one of a database that has it from before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from annotator.accounts import get_annotator
from annotator.queue import account_id, record_rankings, stored_submissions
from annotator.ranking import Submission
from reward.conversation import Messages, conversation_key
from service.core.enums import PromptSource, Role
from service.core.errors import UserError
from service.core.store import Store
from service.data.prompts import insert_prompts, no_system_prompt_id
from service.data.snapshots import LEGACY_TRAFFIC_ANNOTATOR, TRAFFIC_ANNOTATOR
from service.data.tasks import insert_tasks

MAX_NAME = 64  # what annotator.accounts allows
MAX_SUBMISSION_ID = 128  # what annotator.ranking.Submission allows
TRAFFIC_BATCH = "traffic"


class VoteRefused(UserError):
    """A vote that cannot become a ranking; `status` is the HTTP status the gateway answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Vote:
    """A client's preference between the choices of one logged response."""

    response_id: str
    key_name: str
    conversation: Messages  # the user's conversation, ending with the user turn the choices answer
    texts: list[str]  # the choices, in the response's order
    model_ids: list[int | None]  # the model that wrote each choice
    preferred: int  # index into texts
    system_prompt_id: int | None = None  # the stored system prompt the choices were sampled under
    params: dict[str, Any] = field(default_factory=dict)  # the sampling parameters asked for

    @property
    def submission_id(self) -> str:
        return f"traffic:{self.response_id}"


def traffic_account_name(key_name: str) -> str:
    """The account a key's votes are stored under (a long key name is shortened with a hash, so the
    name stays within an account name's 64 characters)."""
    name = TRAFFIC_ANNOTATOR + key_name
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(key_name.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - len(digest) - 1]}.{digest}"


def _refusal(cur: duckdb.DuckDBPyConnection, vote: Vote) -> VoteRefused | None:
    if stored_submissions(cur, [vote.submission_id]):
        return VoteRefused(f"a vote for response {vote.response_id!r} was already recorded", 409)
    if cur.execute(
        "SELECT 1 FROM prompts WHERE text = ? AND source = ?",
        [conversation_key(vote.conversation), PromptSource.EVAL],
    ).fetchone():
        return VoteRefused("this prompt is held out for evaluation, so a vote on it is not training data")
    return None


def vote_account(store: Store, vote: Vote) -> int:
    """Refuse a vote that cannot be stored (VoteRefused), else the id of its key's account (made when
    it is new, in its own transaction: call this before the one that stores the vote)."""
    if len(vote.submission_id) > MAX_SUBMISSION_ID:
        raise VoteRefused(f"response id {vote.response_id!r} is too long to vote on")
    if len(vote.texts) < 2 or not 0 <= vote.preferred < len(vote.texts):
        raise VoteRefused(f"preferred index {vote.preferred} does not name one of {len(vote.texts)} choices")
    refused = _refusal(store.cursor(), vote)
    if refused is not None:
        raise refused
    legacy = get_annotator(store, LEGACY_TRAFFIC_ANNOTATOR + vote.key_name)
    if legacy is not None and legacy["role"] == Role.IMPORT:
        return legacy["id"]
    return account_id(store, traffic_account_name(vote.key_name), Role.IMPORT)


def store_vote(store: Store, cur: duckdb.DuckDBPyConnection, vote: Vote, annotator_id: int) -> int:
    """Store the vote in the caller's transaction: its prompt (source 'served', unless stored
    before), the choices as samples, a task needing one ranking, and the ranking, preferred choice
    first and the others tied after it. Returns the ranking's id; VoteRefused (nothing stored) for
    a vote recorded meanwhile or a prompt held out for evaluation."""
    refused = _refusal(cur, vote)  # again, in the transaction: another vote may have come in between
    if refused is not None:
        raise refused
    prompt_ids, _ = insert_prompts(cur, [vote.conversation], PromptSource.SERVED, vote.response_id)
    prompt_id = prompt_ids[conversation_key(vote.conversation)]
    system_id = vote.system_prompt_id or no_system_prompt_id(cur)
    sample_ids = [
        _one(
            cur.execute(
                "INSERT INTO samples (prompt_id, system_prompt_id, model_id, params, params_hash, "
                "sample_index, text) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [prompt_id, system_id, model, json.dumps(vote.params), vote.submission_id, i, text],
            ).fetchone()
        )
        for i, (text, model) in enumerate(zip(vote.texts, vote.model_ids, strict=True))
    ]
    (task_id,) = insert_tasks(
        store, cur, [{"prompt_id": prompt_id, "sample_ids": sample_ids}], 1, TRAFFIC_BATCH
    )
    ranks = [1 if i == vote.preferred else 2 for i in range(len(vote.texts))]
    (result,) = record_rankings(
        cur, [(annotator_id, Submission(task_id=task_id, submission_id=vote.submission_id, ranks=ranks))]
    )
    assert result.ranking_id is not None  # a ranking, never a quiz answer: imports are not quizzed
    return result.ranking_id


def _one(row: tuple[Any, ...] | None) -> int:
    assert row is not None  # RETURNING gives the inserted row
    return row[0]
