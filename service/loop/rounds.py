"""Rounds of the loop (`rankloop demo`, `rankloop loop`): one row per round, holding the step it
finished last and what each step made (batch, snapshot, reward model, policy, deployment).

A round's steps run in order; each records its result before the next starts, so a round cut
off by a crash or Ctrl-C resumes at the first unfinished step, with what the others made.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.errors import StoreError
from service.core.store import Store

STEPS = ("sample", "rank", "snapshot", "reward", "policy", "evaluate", "deploy")
FIELDS = ("sampled_model_id", "batch", "snapshot_id", "reward_model_id", "policy_model_id", "deployed_model_id",
          "excluded", "note")


class RoundStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["demo", "loop"] = Field(description="which command runs the round")


class RoundStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: int = Field(ge=1, le=2**63 - 1)
    step: Literal[STEPS] = Field(description="the step just finished")
    seconds: float = Field(0.0, ge=0, description="its wall time")
    values: dict[str, Any] = Field(default_factory=dict, description=f"what it made: any of {', '.join(FIELDS)}")
    finished: bool = Field(False, description="the round is done")


def _row(store: Store, round_id: int) -> dict:
    rows = store.query("SELECT * FROM rounds WHERE id = ?", [round_id])
    if not rows:
        raise StoreError(f"no round {round_id}; `rankloop rounds` lists them")
    row = rows[0]
    for col in ("excluded", "stages"):
        row[col] = json.loads(row[col]) if row[col] else ({} if col == "stages" else [])
    return row


def open_round(store: Store, p: RoundStart) -> dict:
    """The unfinished round of this kind (to resume), or a new one."""
    with store.write() as cur:
        found = cur.execute("SELECT id FROM rounds WHERE kind = ? AND status = 'running' ORDER BY id DESC LIMIT 1",
                            [p.kind]).fetchone()
        round_id = found[0] if found else cur.execute(
            "INSERT INTO rounds (kind, stages) VALUES (?, '{}') RETURNING id", [p.kind]).fetchone()[0]
    return _row(store, round_id)


def finish_step(store: Store, p: RoundStep) -> dict:
    unknown = set(p.values) - set(FIELDS)
    if unknown:
        raise StoreError(f"round fields {sorted(unknown)} are unknown; valid: {', '.join(FIELDS)}")
    row = _row(store, p.round_id)
    if row["status"] != "running":
        raise StoreError(f"round {p.round_id} is {row['status']}; start another")
    stages = {**row["stages"], p.step: round(p.seconds, 1)}
    values = {k: json.dumps(v) if k == "excluded" else v for k, v in p.values.items()}
    sets = ", ".join(f"{k} = ?" for k in values)
    with store.write() as cur:
        cur.execute(f"UPDATE rounds SET step = ?, stages = ?{', ' + sets if sets else ''}, status = ?, finished_at = ? "
                    "WHERE id = ?", [p.step, json.dumps(stages), *values.values(),
                                     "done" if p.finished else "running",
                                     datetime.now(UTC) if p.finished else None, p.round_id])
    return _row(store, p.round_id)


def list_rounds(store: Store) -> list[dict]:
    return [_row(store, r["id"]) for r in store.query("SELECT id FROM rounds ORDER BY id")]


def next_step(row: dict) -> str | None:
    """The first step of `row` not yet done (None: all done)."""
    if row["step"] is None:
        return STEPS[0]
    i = STEPS.index(row["step"]) + 1
    return STEPS[i] if i < len(STEPS) else None
