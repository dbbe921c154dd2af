"""What served traffic gives back to the loop: feedback on responses and rankings from clients'
votes (prompts for the next round: service/data/traffic_prompts.py).

    POST /v1/feedback {"response_id": "chatcmpl-...", "score": 0.8 | "thumbs": "up", "comment": "..."}
    POST /v1/feedback {"response_id": "chatcmpl-...", "preferred_index": 1}

A vote between the choices of one response (`n > 1`, or an arena's two models) becomes a
ranking: its prompt joins the pool (source 'served'), the choices are stored as samples of the
models that wrote them, and the key's account `traffic:KEYNAME` ranks the preferred one first,
the others tied after it. Votes need the response's text, so they work for keys (or a
service) that log traffic, and arena answers, which are always logged.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reward.conversation import conversation_key
from service.core.store import Store
from service.data.prompts import NO_SYSTEM_PROMPT
from service.data.snapshots import TRAFFIC_ANNOTATOR
from service.data.traffic_prompts import conversation
from service.gateway.keys import Key
from service.gateway.schemas import GatewayError


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=200)
    score: float | None = Field(None, ge=-1e6, le=1e6)
    thumbs: Literal["up", "down"] | None = None
    preferred_index: int | None = Field(None, ge=0, le=127)
    comment: str | None = Field(None, max_length=5000)

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.score is None and self.thumbs is None and self.preferred_index is None and not self.comment:
            raise ValueError("give at least one of score, thumbs, preferred_index or comment")
        return self


def choice_texts(response: dict) -> list[str]:
    return [
        (c.get("message") or {}).get("content") or c.get("text") or "" for c in response.get("choices", [])
    ]


def record_feedback(store: Store, key: Key, fb: Feedback) -> dict:
    """Store feedback on one of this key's responses (and a ranking for a vote); all or nothing."""
    rows = store.query(
        "SELECT * FROM traffic WHERE response_id = ? AND key_id = ? AND status = 200 ORDER BY id LIMIT 1",
        [fb.response_id, key.id],
    )
    if not rows:  # another key's response is as unknown as one that does not exist
        raise GatewayError(
            404,
            f"no response {fb.response_id!r} from this key; feedback names the id of a "
            "response this key received",
            param="response_id",
        )
    row = rows[0]
    ranking_id = None
    with store.write() as cur:
        if fb.preferred_index is not None:
            ranking_id = _vote(store, cur, key, row, fb.preferred_index)
        feedback_id = cur.execute(
            "INSERT INTO feedback (response_id, key_id, score, thumbs, preferred_index, comment, ranking_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [fb.response_id, key.id, fb.score, fb.thumbs, fb.preferred_index, fb.comment, ranking_id],
        ).fetchone()[0]
    return {"id": feedback_id, "response_id": fb.response_id, "ranking_id": ranking_id}


def _vote(store: Store, cur, key: Key, row: dict, preferred: int) -> int:
    if row["request"] is None or row["response"] is None:
        raise GatewayError(
            400,
            "this response was not logged, so a vote cannot become a ranking; create the key "
            "with --log-traffic (or set gateway.log_traffic)",
            param="preferred_index",
        )
    request, response = json.loads(row["request"]), json.loads(row["response"])
    texts = choice_texts(response)
    if len(texts) < 2:
        raise GatewayError(
            400,
            "preferred_index needs a response with several choices (n > 1 or the arena)",
            param="preferred_index",
        )
    if preferred >= len(texts):
        raise GatewayError(
            400,
            f"preferred_index {preferred} is out of range: the response has {len(texts)} "
            f"choices (0..{len(texts) - 1})",
            param="preferred_index",
        )
    submission = f"traffic:{row['response_id']}"
    if cur.execute("SELECT 1 FROM rankings WHERE submission_id = ?", [submission]).fetchone():
        raise GatewayError(
            409, f"a vote for response {row['response_id']!r} was already recorded", param="preferred_index"
        )
    conv = conversation(request)
    if not conv or conv[-1]["role"] != "user":
        raise GatewayError(400, "only a chat conversation that ends with a user turn can become a ranking")
    if row["system_prompt_id"] is None and len(conv) < len(request.get("messages", [])):
        # The client's own system message is not a stored system prompt: the samples would lose it.
        raise GatewayError(
            400,
            "a vote on answers to your own system message cannot become a ranking; name a "
            "stored one with system_prompt instead",
            param="preferred_index",
        )
    text = conversation_key(conv)
    if cur.execute("SELECT 1 FROM prompts WHERE text = ? AND source = 'eval'", [text]).fetchone():
        raise GatewayError(
            400,
            "this prompt is held out for evaluation, so a vote on it is not training data",
            param="preferred_index",
        )
    cur.execute(
        "INSERT INTO prompts (text, messages, source, source_ref) SELECT ?, ?::JSON, 'served', ? "
        "WHERE ? NOT IN (SELECT text FROM prompts)",
        [text, json.dumps(conv), row["response_id"], text],
    )
    prompt_id = cur.execute("SELECT id FROM prompts WHERE text = ?", [text]).fetchone()[0]
    system_id = row["system_prompt_id"] or _no_system_prompt(cur)
    models = response.get("rankloop_models") or [row["model_id"]] * len(texts)
    params = {k: v for k, v in request.items() if k in ("temperature", "top_p", "max_tokens", "n")}
    sample_ids = [
        cur.execute(
            "INSERT INTO samples (prompt_id, system_prompt_id, model_id, params, params_hash, sample_index, text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [prompt_id, system_id, models[i], json.dumps(params), submission, i, t],
        ).fetchone()[0]
        for i, t in enumerate(texts)
    ]
    task_id = cur.execute(
        "INSERT INTO tasks (prompt_id, sample_ids, required_rankings, batch) "
        "VALUES (?, ?, 1, 'traffic') RETURNING id",
        [prompt_id, sample_ids],
    ).fetchone()[0]
    name = TRAFFIC_ANNOTATOR + key.name
    annotator = cur.execute("SELECT id FROM annotators WHERE name = ?", [name]).fetchone()
    annotator_id = (
        annotator[0]
        if annotator
        else cur.execute(
            "INSERT INTO annotators (name, role) VALUES (?, 'import') RETURNING id", [name]
        ).fetchone()[0]
    )
    ranks = [1 if i == preferred else 2 for i in range(len(texts))]
    return cur.execute(
        "INSERT INTO rankings (task_id, annotator_id, ranks, submission_id) VALUES (?, ?, ?, ?) RETURNING id",
        [task_id, annotator_id, ranks, submission],
    ).fetchone()[0]


def _no_system_prompt(cur) -> int:
    row = cur.execute(
        "SELECT id FROM system_prompts WHERE name = ? ORDER BY version DESC LIMIT 1", [NO_SYSTEM_PROMPT]
    ).fetchone()
    return (
        row[0]
        if row
        else cur.execute(
            "INSERT INTO system_prompts (name, version, text) VALUES (?, 1, '') RETURNING id",
            [NO_SYSTEM_PROMPT],
        ).fetchone()[0]
    )
