"""What served traffic gives back to the loop: feedback on responses and rankings from clients'
votes (prompts for the next round: service/data/traffic_prompts.py).

    POST /v1/feedback {"response_id": "chatcmpl-...", "score": 0.8 | "thumbs": "up", "comment": "..."}
    POST /v1/feedback {"response_id": "chatcmpl-...", "preferred_index": 1}

A vote between the choices of one response (`n > 1`, or an arena's two models) becomes a
ranking: its prompt joins the pool (source 'served'), the choices are stored as samples of the
models that wrote them, and the key's account `traffic.KEYNAME` ranks the preferred one first,
the others tied after it (service/data/votes.py, through the same functions as every other
ranking). Votes need the response's text, so they work for keys (or a service) that log
traffic, and arena answers, which are always logged.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.settings import GatewayOptions
from service.core.store import Store
from service.data.pii import count, scrub, scrub_messages
from service.data.traffic_prompts import KEPT_OUT, conversation
from service.data.votes import Vote, VoteRefused, store_vote, vote_account
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


def record_feedback(store: Store, key: Key, fb: Feedback, opts: GatewayOptions | None = None) -> dict:
    """Store feedback on one of this key's responses (and a ranking for a vote, its texts without
    personal data); all or nothing."""
    opts = opts or GatewayOptions()
    if fb.preferred_index is not None and not opts.traffic_to_annotation:
        raise GatewayError(403, KEPT_OUT, param="preferred_index")
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
    vote = _vote(key, rows[0], fb.preferred_index, opts) if fb.preferred_index is not None else None
    try:
        annotator_id = vote_account(store, vote) if vote is not None else None
        with store.write() as cur:
            ranking_id = None
            if vote is not None and annotator_id is not None:
                ranking_id = store_vote(store, cur, vote, annotator_id)
            found = cur.execute(
                "INSERT INTO feedback (response_id, key_id, score, thumbs, preferred_index, comment, ranking_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [fb.response_id, key.id, fb.score, fb.thumbs, fb.preferred_index, fb.comment, ranking_id],
            ).fetchone()
    except VoteRefused as e:
        raise GatewayError(e.status, str(e), param="preferred_index") from None
    assert found is not None  # RETURNING gives the inserted row
    return {"id": found[0], "response_id": fb.response_id, "ranking_id": ranking_id}


def _vote(key: Key, row: dict, preferred: int, opts: GatewayOptions) -> Vote:
    """The vote a logged response allows, personal data removed (GatewayError 400 when it cannot be one)."""
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
    removed: Counter = Counter()
    conv = scrub_messages(conv, opts.phone_regions, removed)
    texts = [scrub(t, opts.phone_regions, removed) for t in texts]
    count(removed, "votes")
    return Vote(
        response_id=row["response_id"],
        key_name=key.name,
        conversation=conv,
        texts=texts,
        model_ids=response.get("rankloop_models") or [row["model_id"]] * len(texts),
        preferred=preferred,
        system_prompt_id=row["system_prompt_id"],
        params={k: v for k, v in request.items() if k in ("temperature", "top_p", "max_tokens", "n")},
    )
