"""Rounds of the loop (`rankloop demo`, `rankloop loop`): one row per round, holding the step it
finished last and what each step made (batch, snapshot, reward model, policy, deployment).

A round's steps run in order; each records its result before the next starts, so a round cut
off by a crash or Ctrl-C resumes at the first unfinished step, with what the others made.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from service.core.errors import UserError
from service.core.store import Store

Step = Literal["sample", "rank", "snapshot", "reward", "policy", "evaluate", "deploy"]
STEPS: tuple[Step, ...] = get_args(Step)


class RoundValues(BaseModel):
    """What a step made (each step sets its own)."""

    model_config = ConfigDict(extra="forbid")
    sampled_model_id: int | None = Field(None, ge=1)
    batch: str | None = Field(None, max_length=200)
    snapshot_id: str | None = Field(None, max_length=64)
    reward_model_id: int | None = Field(None, ge=1)
    policy_model_id: int | None = Field(None, ge=1)
    deployed_model_id: int | None = Field(None, ge=1)
    excluded: list[str] | None = None
    note: str | None = Field(None, max_length=1000)


FIELDS = tuple(RoundValues.model_fields)


class RoundStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["demo", "loop"] = Field(description="which command runs the round")


class RoundStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: int = Field(ge=1, le=2**63 - 1)
    step: Step = Field(description="the step just finished")
    seconds: float = Field(0.0, ge=0, allow_inf_nan=False, description="its wall time")
    values: RoundValues = Field(default_factory=RoundValues, description="what it made")
    finished: bool = Field(False, description="the round is done")


class RoundJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: int = Field(ge=1, le=2**63 - 1)
    job_id: int = Field(ge=1, le=2**63 - 1, description="the job the round's current step is waiting for")


def _row(store: Store, round_id: int) -> dict:
    rows = store.query("SELECT * FROM rounds WHERE id = ?", [round_id])
    if not rows:
        raise UserError(f"no round {round_id}; `rankloop rounds` lists them")
    row = rows[0]
    for col in ("excluded", "stages"):
        row[col] = json.loads(row[col]) if row[col] else ({} if col == "stages" else [])
    return row


def open_round(store: Store, p: RoundStart) -> dict:
    """The unfinished round of this kind (to resume), or a new one."""
    with store.write() as cur:
        found = cur.execute(
            "SELECT id FROM rounds WHERE kind = ? AND status = 'running' ORDER BY id DESC LIMIT 1", [p.kind]
        ).fetchone()
        made = (
            None
            if found
            else cur.execute(
                "INSERT INTO rounds (kind, stages) VALUES (?, '{}') RETURNING id", [p.kind]
            ).fetchone()
        )
        round_id = (found or made or (0,))[0]
    return _row(store, round_id)


def _running(store: Store, round_id: int) -> dict:
    row = _row(store, round_id)
    if row["status"] != "running":
        raise UserError(f"round {round_id} is {row['status']}; start another")
    return row


def finish_step(store: Store, p: RoundStep) -> dict:
    """Record a finished step (the next one in order) and what it made; the round's job is cleared."""
    with store.write() as cur:  # read and update together: one writer at a time
        row = _running(store, p.round_id)
        if p.step != next_step(row):
            raise UserError(f"round {p.round_id} is at step {next_step(row)!r}, not {p.step!r}")
        values = {
            k: json.dumps(v) if k == "excluded" else v
            for k, v in p.values.model_dump(exclude_unset=True).items()
        }
        sets = "".join(f", {k} = ?" for k in values)
        cur.execute(
            f"UPDATE rounds SET step = ?, stages = ?, job_id = NULL{sets}, status = ?, finished_at = ? "
            "WHERE id = ?",
            [
                p.step,
                json.dumps({**row["stages"], p.step: round(p.seconds, 1)}),
                *values.values(),
                "done" if p.finished else "running",
                datetime.now(UTC) if p.finished else None,
                p.round_id,
            ],
        )
    return _row(store, p.round_id)


def set_job(store: Store, p: RoundJob) -> dict:
    """The job the current step waits for: a resumed round follows it instead of starting another."""
    with store.write() as cur:
        _running(store, p.round_id)
        cur.execute("UPDATE rounds SET job_id = ? WHERE id = ?", [p.job_id, p.round_id])
    return _row(store, p.round_id)


class BatchName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch: str = Field(max_length=200)


def batch_progress(store: Store, p: BatchName) -> dict:
    """A batch's tasks, the rankings they need in all, and the rankings stored (skips left out)."""
    row = store.query(
        """SELECT count(*) AS tasks, coalesce(sum(required_rankings), 0) AS needed,
                  (SELECT count(*) FROM rankings r JOIN tasks t2 ON t2.id = r.task_id
                   WHERE t2.batch = ? AND NOT r.skipped) AS rankings
           FROM tasks WHERE batch = ?""",
        [p.batch, p.batch],
    )[0]
    return {"batch": p.batch, **{k: int(v) for k, v in row.items()}}


def list_rounds(store: Store) -> list[dict]:
    return [_row(store, r["id"]) for r in store.query("SELECT id FROM rounds ORDER BY id")]


def next_step(row: dict) -> str | None:
    """The first step of `row` not yet done (None: all done)."""
    if row["step"] is None:
        return STEPS[0]
    i = STEPS.index(row["step"]) + 1
    return STEPS[i] if i < len(STEPS) else None
