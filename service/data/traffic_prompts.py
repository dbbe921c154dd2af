"""Served traffic back into the prompt pool: the user's conversations from logged requests, with
personal data taken out (service/data/pii.py), deduplicated, for the next sampling round
(`rankloop prompts from-traffic`). `gateway.traffic_to_annotation: false` refuses it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from reward.conversation import conversation_key, normalized
from service.core.enums import PromptSource
from service.core.errors import UserError
from service.core.settings import GatewayOptions
from service.core.store import Store
from service.data.pii import count, scrub_messages
from service.data.prompts import add_prompts

KEPT_OUT = (
    "this service keeps served traffic out of annotation (gateway.traffic_to_annotation: false); "
    "set it to true to use traffic as prompts and votes"
)


def conversation(request: dict) -> list[dict]:
    """The user's conversation from a logged chat request (system messages are not part of a prompt)."""
    return normalized([m for m in request.get("messages", []) if m.get("role") != "system"])


def prompts_from_traffic(
    store: Store, since: datetime | None, min_count: int, opts: GatewayOptions | None = None
) -> dict:
    """Logged chat prompts asked at least `min_count` times (since a date) into the prompt pool,
    personal data removed, deduplicated against it and each other."""
    opts = opts or GatewayOptions()
    if not opts.traffic_to_annotation:
        raise UserError(KEPT_OUT)
    rows = store.query(
        "SELECT request FROM traffic WHERE request IS NOT NULL AND status = 200"
        + (" AND created_at >= ?" if since else ""),
        [since] if since else [],
    )
    counts: dict[str, tuple[int, list[dict]]] = {}
    for r in rows:
        request = json.loads(r["request"])
        if "messages" not in request:
            continue
        conv = conversation(request)
        if conv and conv[-1]["role"] == "user":
            k = conversation_key(conv)
            counts[k] = (counts.get(k, (0, conv))[0] + 1, conv)
    removed: Counter = Counter()
    chosen = [
        scrub_messages(conv, opts.phone_regions, removed) for n, conv in counts.values() if n >= min_count
    ]
    added, skipped = add_prompts(store, chosen, PromptSource.SERVED, "traffic") if chosen else (0, 0)
    count(removed, "prompts")
    return {
        "logged_prompts": len(counts),
        "chosen": len(chosen),
        "added": added,
        "already_stored": skipped,
        "personal_data_removed": dict(removed),
    }
