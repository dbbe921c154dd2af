"""Deployments in the database: which model serves (the newest active row), what may be
deployed, and the record of each change. The gateway (service/gateway/deploy.py) starts the
servers; these checks and records are the same with or without a running service.
"""

from __future__ import annotations

import json
from typing import Any

from service.core.enums import ModelKind, ModelStatus
from service.core.errors import UserError
from service.core.registry import get_model
from service.core.store import Store
from service.data.prompts import latest_system_prompts

SERVABLE = (ModelKind.PRETRAINED, ModelKind.SFT, ModelKind.POLICY)


def current_deployment(store: Store) -> dict | None:
    rows = store.query("SELECT * FROM deployments WHERE status = 'active' ORDER BY id DESC LIMIT 1")
    if not rows:
        return None
    row = rows[0]
    row["system_prompts"] = json.loads(row["system_prompts"]) if row["system_prompts"] else None
    return row


def check_deployable(store: Store, model_id: int, force: bool) -> dict:
    model = get_model(store, model_id)
    if model["kind"] not in SERVABLE:
        raise UserError(
            f"model {model_id} is a {model['kind']} model; deploy a chat model ({', '.join(SERVABLE)})"
        )
    if model["status"] != ModelStatus.ACTIVE and not force:
        raise UserError(
            f"model {model_id} is {model['status']}, not approved: it passes the gate or "
            "`rankloop models promote`, or deploy it anyway with --force"
        )
    return model


def check_arms(store: Store, arms: dict[str, float] | None) -> None:
    if not arms:
        return
    found = {s["name"] for s in latest_system_prompts(store, list(arms))}
    missing = [n for n in arms if n not in found]
    if missing:
        raise UserError(
            f"no system prompt named {', '.join(missing)}; `rankloop system-prompts list` shows them"
        )
    if any(w < 0 for w in arms.values()) or not sum(arms.values()) > 0:
        raise UserError("system prompt weights must be >= 0 with at least one positive")


def record(store: Store, fields: dict[str, Any]) -> int:
    """Make `fields` the active deployment (the previous one becomes 'replaced')."""
    with store.write() as cur:
        cur.execute("UPDATE deployments SET status = 'replaced' WHERE status = 'active'")
        cols = list(fields)
        row = cur.execute(
            f"INSERT INTO deployments ({', '.join(cols)}, status) VALUES ({', '.join('?' for _ in cols)}, 'active') "
            "RETURNING id",
            [json.dumps(v) if k == "system_prompts" and v is not None else v for k, v in fields.items()],
        ).fetchone()
    assert row is not None  # RETURNING gives the inserted row
    return row[0]
