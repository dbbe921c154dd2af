"""Clients' votes become rankings through the same paths as every other ranking: the gateway's
`record_feedback` on a logged response (no vLLM needed: the traffic row is written here), and
service/data/votes.py beneath it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import RankingError, Submission
from service.core.errors import UserError
from service.core.registry import register_model
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data.prompts import add_prompts
from service.data.snapshots import SnapshotFilters, collect
from service.data.votes import Vote, VoteRefused, store_vote, traffic_account_name, vote_account
from service.gateway.feedback import Feedback, record_feedback
from service.gateway.key_records import KeyScope
from service.gateway.keys import Key
from service.gateway.schemas import GatewayError

ASKED = [{"role": "user", "content": "Which birds can swim?"}]


def logged(store: Store, key: Key, response_id: str, texts: list[str], messages=ASKED) -> None:
    """A logged chat response with several choices, as the gateway's traffic log writes it."""
    models = [register_model(store, "policy", Path(f"/m/{response_id}-{i}")) for i in range(len(texts))]
    response = {
        "id": response_id,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)
        ],
        "rankloop_models": models,
    }
    with store.write() as cur:
        cur.execute(
            "INSERT INTO traffic (response_id, key_id, route, n, status, request, response) "
            "VALUES (?, ?, 'current', ?, 200, ?, ?)",
            [
                response_id,
                key.id,
                len(texts),
                json.dumps({"messages": messages, "n": len(texts)}),
                json.dumps(response),
            ],
        )


def vote(store: Store, key: Key, response_id: str, preferred: int) -> dict:
    return record_feedback(store, key, Feedback(response_id=response_id, preferred_index=preferred))


KEY = Key(id=1, name="voter", scope=KeyScope.CLIENT, rpm=None, tpm=None, log_traffic=True)


def test_a_vote_is_stored_dense_and_idempotent_by_the_queue(store: Store) -> None:
    logged(store, KEY, "chatcmpl-1", ["Ducks.", "Penguins and ducks.", "Rocks."])
    got = vote(store, KEY, "chatcmpl-1", 1)
    row = store.query(
        """SELECT r.id, r.ranks, r.submission_id, r.flags, a.name, a.role, t.batch, t.required_rankings,
                  p.source, f.ranking_id FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           JOIN tasks t ON t.id = r.task_id JOIN prompts p ON p.id = t.prompt_id
           JOIN feedback f ON f.ranking_id = r.id"""
    )[0]
    assert got["ranking_id"] == row["id"] == row["ranking_id"]
    assert row["ranks"] == [2, 1, 2]  # the preferred first, the others tied after it
    assert (row["submission_id"], row["flags"], row["batch"], row["required_rankings"], row["source"]) == (
        "traffic:chatcmpl-1",
        "[]",
        "traffic",
        1,
        "served",
    )
    assert (row["name"], row["role"]) == ("traffic.voter", "import")
    before = store.counts()
    with pytest.raises(GatewayError) as again:
        vote(store, KEY, "chatcmpl-1", 0)
    assert again.value.status == 409 and "already recorded" in again.value.message
    assert store.counts() == before and store.scalar("SELECT count(*) FROM feedback") == 1
    # The ranking is the queue's: the same submission id through a submit answers as a duplicate of it.
    person = add_annotator(store, "sim", "simulated")
    assert queue.next_task(store, person, AnnotationOptions(gold_rate=0)) is None  # the vote completed it
    with pytest.raises(RankingError, match="already used for another task"):
        queue.submit(store, person, Submission(task_id=999, submission_id="traffic:chatcmpl-1", ranks=[1, 2]))


def test_votes_of_one_key_share_one_account_and_snapshots_know_them(store: Store) -> None:
    logged(store, KEY, "chatcmpl-1", ["Ducks.", "Rocks."])
    logged(store, KEY, "chatcmpl-2", ["Geese.", "Stones."], [{"role": "user", "content": "And geese?"}])
    vote(store, KEY, "chatcmpl-1", 0)
    vote(store, KEY, "chatcmpl-2", 1)
    assert store.scalar("SELECT count(*) FROM annotators") == 1
    rows, dropped = collect(store, SnapshotFilters(eval_fraction=0, include_traffic=False))
    assert rows == [] and dropped["traffic"] == 2
    assert len(collect(store, SnapshotFilters(eval_fraction=0))[0]) == 2


def test_a_database_from_before_keeps_its_traffic_account(store: Store) -> None:
    """`traffic:KEYNAME` accounts (made before account names were checked) keep getting their key's votes."""
    with store.write() as cur:
        cur.execute("INSERT INTO annotators (name, role) VALUES ('traffic:voter', 'import')")
    logged(store, KEY, "chatcmpl-1", ["Ducks.", "Rocks."])
    vote(store, KEY, "chatcmpl-1", 0)
    assert store.query("SELECT a.name FROM rankings r JOIN annotators a ON a.id = r.annotator_id") == [
        {"name": "traffic:voter"}
    ]
    assert collect(store, SnapshotFilters(eval_fraction=0, include_traffic=False))[1]["traffic"] == 1


def test_long_key_names_still_make_a_valid_account() -> None:
    name = traffic_account_name("k" * 64)
    assert len(name) == 64 and name.startswith("traffic.kkk")
    assert traffic_account_name("k" * 64) == name != traffic_account_name("k" * 63 + "j")


def test_a_vote_on_a_held_out_prompt_stores_nothing(store: Store) -> None:
    add_prompts(store, [ASKED], source="eval")
    logged(store, KEY, "chatcmpl-1", ["Ducks.", "Rocks."])
    before = store.counts()
    with pytest.raises(GatewayError) as refused:
        vote(store, KEY, "chatcmpl-1", 0)
    assert refused.value.status == 400 and "held out for evaluation" in refused.value.message
    assert store.counts() == before  # not even the key's account


def test_a_vote_recorded_meanwhile_is_refused_inside_the_transaction(store: Store) -> None:
    """Two sends of one vote racing: the second finds the first in its own transaction."""
    logged(store, KEY, "chatcmpl-1", ["Ducks.", "Rocks."])
    ballot = Vote(
        "chatcmpl-1",
        "voter",
        ASKED,
        ["Ducks.", "Rocks."],
        [store.scalar("SELECT min(id) FROM models")] * 2,
        0,
    )
    who = vote_account(store, ballot)
    assert vote_account(store, ballot) == who  # nothing recorded yet: both sends get this far
    with store.write() as cur:
        store_vote(store, cur, ballot, who)
    before = store.counts()
    with pytest.raises(VoteRefused) as late, store.write() as cur:
        store_vote(store, cur, ballot, who)
    assert late.value.status == 409 and store.counts() == before


def test_a_person_cannot_take_a_traffic_account_name(store: Store) -> None:
    """A person named `traffic.my-app` would block every vote of key `my-app`: the name is refused."""
    with pytest.raises(UserError, match="kept for votes from served traffic"):
        add_annotator(store, traffic_account_name("my-app"), "annotator", "a-long-password")
    assert store.scalar("SELECT count(*) FROM annotators") == 0
    add_annotator(store, "trafficlight", "annotator", "a-long-password")  # only the prefix is kept
