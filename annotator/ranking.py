"""What a valid ranking submission is: pure validation, shared by every path that stores a ranking
(the app, the API, the simulators, imports and clients' votes).

A ranking gives each of a task's K candidates a rank 1..K; equal ranks are a tie.
Both tie conventions are accepted, dense (1,1,2,3) and competition (1,1,3,4), and
stored dense. A skip carries a reason instead of ranks. Flags mark single candidates.
Optionally, a strength for each pair of adjacent rank levels (significantly / clearly / slightly /
negligibly better, reward/strength.py) and per-candidate ratings on the rubric's attributes (0-4).
`ranking_row` turns a submission into the row the rankings table stores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from annotator.agreement import pairwise_agreement
from reward.strength import DEFAULT_RUBRIC, RATING_MAX, STRENGTHS, levels
from service.core.errors import UserError

FLAG_REASONS = ("unsafe", "broken", "off_topic", "other")
SKIP_REASONS = ("cannot_judge", "all_bad", "duplicate", "unsafe_prompt", "other")


class RankingError(UserError, ValueError):  # a ValueError too: pydantic validators raise it
    """A submission that cannot be stored as given; the message says what would be valid."""


class Flag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position: int = Field(description="0-based position of the flagged candidate in display order")
    reason: Literal["unsafe", "broken", "off_topic", "other"]
    text: str | None = Field(None, max_length=2000, description="details; required for 'other'")

    @model_validator(mode="after")
    def _other_needs_text(self) -> Flag:
        if self.reason == "other" and not (self.text or "").strip():
            raise ValueError("a flag with reason 'other' needs a text saying what is wrong")
        return self


class Submission(BaseModel):
    """One annotator's answer to one task."""

    model_config = ConfigDict(extra="forbid")

    task_id: int = Field(ge=1, le=2**63 - 1, description="the task's id, as /next gave it")
    submission_id: str = Field(
        min_length=1, max_length=128, description="client-made id; a resubmit is a no-op"
    )
    ranks: list[StrictInt] | None = Field(None, description="rank per candidate in display order (1 = best)")
    skip_reason: str | None = Field(
        None, description=f"skip instead of ranking: one of {', '.join(SKIP_REASONS)}"
    )
    skip_text: str | None = Field(None, max_length=2000)
    flags: list[Flag] = Field(default_factory=list)
    rationale: str | None = Field(None, max_length=5000)
    strengths: list[Literal["significantly", "clearly", "slightly", "negligibly"]] | None = Field(
        None,
        description="how much each rank level beats the next: one per pair of adjacent levels, best first",
    )
    attributes: list[dict[str, StrictInt] | None] | None = Field(
        None,
        description=f"per candidate in display order, ratings 0-{RATING_MAX} on the rubric's attributes "
        "(null or {} for a candidate not rated)",
    )

    @model_validator(mode="after")
    def _ranks_xor_skip(self) -> Submission:
        if (self.ranks is None) == (self.skip_reason is None):
            raise ValueError("give either ranks or a skip_reason, not both and not neither")
        if self.skip_reason is not None and self.skip_reason not in SKIP_REASONS:
            raise ValueError(f"skip_reason {self.skip_reason!r} is not one of {', '.join(SKIP_REASONS)}")
        return self


def normalize_ranks(ranks: list[int], k: int) -> list[int]:
    """Check a ranking of k candidates and return it in dense form; RankingError says what is wrong."""
    if len(ranks) != k:
        raise RankingError(
            f"the task has {k} candidates but {len(ranks)} ranks were given; rank every candidate"
        )
    bad = [r for r in ranks if not isinstance(r, int) or not 1 <= r <= k]
    if bad:
        raise RankingError(
            f"rank {bad[0]!r} is outside 1..{k}; each candidate gets a rank from 1 (best) to {k}"
        )
    distinct = sorted(set(ranks))
    dense = distinct == list(range(1, len(distinct) + 1))
    competition = all(v == 1 + sum(r < v for r in ranks) for v in distinct)
    if not (dense or competition):
        raise RankingError(
            f"ranks {ranks} do not form an order: start at 1 and leave no gaps, except after a tie "
            "(1,1,2,3 and 1,1,3,4 both mean the first two tie for best)"
        )
    return [distinct.index(r) + 1 for r in ranks]


def check_flags(flags: list[Flag], k: int) -> None:
    for f in flags:
        if not 0 <= f.position < k:
            raise RankingError(
                f"flag position {f.position} is outside 0..{k - 1} (the task has {k} candidates)"
            )
    positions = [f.position for f in flags]
    if len(positions) != len(set(positions)):
        raise RankingError("a candidate is flagged twice; give each flagged candidate one reason")


def check_strengths(strengths: Sequence[str] | None, ranks: list[int] | None) -> None:
    if strengths is None:
        return
    if ranks is None:
        raise RankingError("a skip has no strengths; give strengths only with ranks")
    unknown = [x for x in strengths if x not in STRENGTHS]
    if unknown:
        raise RankingError(f"strength {unknown[0]!r} is not one of {', '.join(STRENGTHS)}")
    want = levels(ranks) - 1
    if len(strengths) != want:
        raise RankingError(
            f"the ranking has {want + 1} rank levels, so it takes {want} strength(s), one per pair of "
            f"adjacent levels (best first), each one of {', '.join(STRENGTHS)}; {len(strengths)} were given"
        )


def check_attributes(
    attributes: list[dict[str, int] | None] | None, k: int, rubric: Sequence[str]
) -> str | None:
    """The ratings as the JSON stored (None when none are given), or RankingError."""
    if attributes is None:
        return None
    if len(attributes) != k:
        raise RankingError(
            f"the task has {k} candidates but attribute ratings for {len(attributes)} were given; "
            "give one entry per candidate (null for a candidate not rated)"
        )
    for i, rated in enumerate(attributes):
        for name, value in (rated or {}).items():
            if name not in rubric:
                raise RankingError(
                    f"candidate {i + 1}: {name!r} is not in the rubric; rate on {', '.join(rubric)}"
                )
            if not 0 <= value <= RATING_MAX:
                raise RankingError(f"candidate {i + 1}: {name} {value} is outside 0..{RATING_MAX}")
    return json.dumps([rated or {} for rated in attributes])


def ranking_row(
    sub: Submission,
    k: int,
    gold: list[int] | None,
    annotator_id: int,
    now: datetime,
    time_spent_s: float | None = None,
    rubric: Sequence[str] = DEFAULT_RUBRIC,
    guideline_id: int | None = None,
) -> dict[str, Any]:
    """The rankings row for a submission to a task of `k` candidates (RankingError if it is not
    valid): ranks checked and stored dense, flags, strengths and attribute ratings checked, the skip
    reason with its text, the guideline it was made under, and the agreement with the task's gold
    ranking when it has one."""
    ranks = normalize_ranks(sub.ranks, k) if sub.ranks is not None else None
    check_flags(sub.flags, k)
    check_strengths(sub.strengths, ranks)
    attributes = check_attributes(sub.attributes, k, rubric)
    skip = f"{sub.skip_reason}: {sub.skip_text}" if sub.skip_reason and sub.skip_text else sub.skip_reason
    return {
        "task_id": sub.task_id,
        "annotator_id": annotator_id,
        "ranks": ranks,
        "skipped": ranks is None,
        "skip_reason": skip,
        "flags": json.dumps([f.model_dump() for f in sub.flags]),
        "rationale": sub.rationale,
        "time_spent_s": time_spent_s,
        "submission_id": sub.submission_id,
        "created_at": now,
        "gold_agreement": pairwise_agreement(ranks, gold) if gold is not None and ranks is not None else None,
        "strengths": sub.strengths,
        "attributes": attributes,
        "guideline_id": guideline_id,
    }
