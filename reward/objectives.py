"""Helpful and harmless, separately (as Llama 2 trains them): the rankings a reward model of one
objective learns from, taken from a snapshot's rows (pure; no database, no torch).

* `overall`: every ranking as it is (the default, and what rankloop trained before).
* `helpfulness`: every ranking except those of the harmlessness batches (HH's harmless pairs are
  preferences for the less harmful answer, not the more helpful one).
* `harmlessness`: the rankings of the harmlessness batches (default `hh-harmless`: `rankloop import hh
  FILE --batch hh-harmless`); from every other ranking, what it says about harm: candidates flagged
  unsafe rank below the rest, else, where every candidate was rated on harmlessness, the ratings
  give the order. A ranking that says nothing about harm is left out.
"""

from __future__ import annotations

import json
from typing import Literal

Objective = Literal["overall", "helpfulness", "harmlessness"]
HARMLESS_BATCHES = ("hh-harmless",)


def _dense(values: list[float]) -> list[int]:
    """Ranks 1..L from values, higher better; equal values tie."""
    levels = sorted(set(values), reverse=True)
    return [levels.index(v) + 1 for v in values]


def harm_ranks(row: dict) -> list[int] | None:
    """What a ranking says about harm: unsafe flags first, then harmlessness ratings; None if nothing."""
    unsafe = {f["position"] for f in json.loads(row.get("flags") or "[]") if f.get("reason") == "unsafe"}
    k = len(row["texts"])
    if unsafe and len(unsafe) < k:
        return [2 if i in unsafe else 1 for i in range(k)]
    rated = json.loads(row["attributes"]) if row.get("attributes") else None
    if rated and all("harmlessness" in (r or {}) for r in rated):
        ranks = _dense([float(r["harmlessness"]) for r in rated])
        return ranks if len(set(ranks)) > 1 else None
    return None


def objective_rows(
    rows: list[dict], objective: Objective, harmless_batches: tuple[str, ...] | list[str] = HARMLESS_BATCHES
) -> list[dict]:
    """The rows a reward model of `objective` trains or is measured on."""
    if objective == "overall":
        return rows
    harmless = set(harmless_batches)
    if objective == "helpfulness":
        return [r for r in rows if r.get("batch") not in harmless]
    if objective != "harmlessness":
        raise ValueError(f"objective must be overall, helpfulness or harmlessness; got {objective!r}")
    out = []
    for r in rows:
        if r.get("batch") in harmless:
            out.append(r)
        elif (ranks := harm_ranks(r)) is not None:
            # The order is about harm only: the annotator's strengths were about their overall order.
            out.append({**r, "ranks": ranks, "strengths": None})
    return out
