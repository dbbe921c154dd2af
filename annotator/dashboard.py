"""The annotator dashboard: per annotator and per ISO week, what a labelling lead watches, and who
needs attention (`rankloop quality dashboard`, `GET /admin/quality/dashboard`, CSV with `--csv`).

Per row: rankings and skips, rankings per hour (over the span of the week's work), median time on a
task, tie rate (rankings with any tie), agreement with the consensus of the task's other rankers and
with gold, and position bias: how often the candidate shown first is ranked best (a share of it when
it ties for best), against what the display order alone gives. A task's candidates are shuffled once
when it is built, so without a bias the first shown is best 1/K of the time; `position_z` is the
observed count's distance from that expectation in standard deviations (sum over rankings of
p(1-p), p = 1/K).
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import median

from annotator.agreement import agreement_with_consensus
from service.core.enums import HUMAN_ROLES, Role
from service.core.store import Store

PEOPLE = (*HUMAN_ROLES, Role.SIMULATED)
WEEK_COLUMNS = [  # a weekly row as the CLI, the Admin tab and the report show it
    "annotator",
    "week",
    "rankings",
    "per_hour",
    "median_seconds",
    "tie_rate",
    "first_shown_wins",
    "first_shown_expected",
    "position_z",
    "agreement_with_consensus",
    "gold_agreement",
]
# As `rankloop dashboard --csv` and /admin/quality/dashboard.csv write it.
CSV_COLUMNS = ["annotator", "role", *WEEK_COLUMNS[1:], "skips", "gold_tasks"]
POSITION_Z = 2.58  # |z| beyond this (1% two-sided) with at least MIN_RANKINGS rankings: biased
MIN_RANKINGS = 20
LOW_GOLD = 0.5  # gold agreement below this over at least 5 gold tasks
FAST_S = 2.0  # a median under this many seconds on a task: not reading
MANY_TIES = 0.5


def first_shown_share(ranks: list[int]) -> float:
    """How much of "best" the first-shown candidate got: 1, 1/t when it ties with t-1 others, or 0."""
    best = min(ranks)
    return 1.0 / ranks.count(best) if ranks[0] == best else 0.0


def _stats(rows: list[dict]) -> dict:
    ranked = [r for r in rows if not r["skipped"]]
    n = len(ranked)
    observed = sum(first_shown_share(r["ranks"]) for r in ranked)
    expected = sum(1 / len(r["ranks"]) for r in ranked)
    var = sum((1 / len(r["ranks"])) * (1 - 1 / len(r["ranks"])) for r in ranked)
    times = [r["time_spent_s"] for r in rows if r["time_spent_s"] is not None]
    span_h = (
        max((max(r["created_at"] for r in rows) - min(r["created_at"] for r in rows)).total_seconds(), 1)
        / 3600
    )
    agree = [r["agreement"] for r in ranked if r["agreement"] is not None]
    gold = [r["gold_agreement"] for r in ranked if r["gold_agreement"] is not None]
    return {
        "rankings": n,
        "skips": len(rows) - n,
        "per_hour": round(len(rows) / max(span_h, (median(times) if times else 1) / 3600), 1),
        "median_seconds": round(median(times), 1) if times else None,
        "tie_rate": round(sum(len(set(r["ranks"])) < len(r["ranks"]) for r in ranked) / n, 4) if n else None,
        "first_shown_wins": round(observed / n, 4) if n else None,
        "first_shown_expected": round(expected / n, 4) if n else None,
        "position_z": round((observed - expected) / math.sqrt(var), 2) if var else None,
        "agreement_with_consensus": round(sum(agree) / len(agree), 4) if agree else None,
        "gold_agreement": round(sum(gold) / len(gold), 4) if gold else None,
        "gold_tasks": len(gold),
    }


def dashboard(store: Store) -> dict:
    """{"weeks": a row per annotator and week, "annotators": a row per annotator over all weeks,
    "needs_attention": [{"annotator", "reasons"}]} for people and simulated annotators."""
    rows = store.query(
        """SELECT r.task_id, r.ranks, r.skipped, r.time_spent_s, r.gold_agreement, r.created_at,
                  a.name AS annotator, a.role
           FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           WHERE list_contains(?, a.role) ORDER BY r.id""",
        [list(PEOPLE)],
    )
    by_task: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if not r["skipped"]:
            by_task[r["task_id"]].append(r)
    for r in rows:  # agreement with the consensus of the task's other rankers (None when alone)
        others = [o["ranks"] for o in by_task[r["task_id"]] if o is not r]
        r["agreement"] = agreement_with_consensus(r["ranks"], others) if others and not r["skipped"] else None
    per_week: dict[tuple[str, str], list[dict]] = defaultdict(list)
    per_person: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        year, week, _ = r["created_at"].isocalendar()
        per_week[(r["annotator"], f"{year}-W{week:02d}")].append(r)
        per_person[r["annotator"]].append(r)
    weeks = [
        {"annotator": who, "role": group[0]["role"], "week": week, **_stats(group)}
        for (who, week), group in sorted(per_week.items())
    ]
    people = [{"annotator": who, "role": g[0]["role"], **_stats(g)} for who, g in sorted(per_person.items())]
    return {"weeks": weeks, "annotators": people, "needs_attention": needs_attention(people)}


def needs_attention(people: list[dict]) -> list[dict]:
    """Who a lead should look at, and why (each reason with its figure)."""
    agreements = sorted(
        p["agreement_with_consensus"] for p in people if p["agreement_with_consensus"] is not None
    )
    typical = agreements[len(agreements) // 2] if len(agreements) >= 3 else None
    out = []
    for p in people:
        reasons = []
        enough = p["rankings"] >= MIN_RANKINGS
        if enough and p["position_z"] is not None and abs(p["position_z"]) > POSITION_Z:
            reasons.append(
                f"position bias: the first shown is ranked best {p['first_shown_wins']:.0%} of the time, "
                f"{p['first_shown_expected']:.0%} expected (z {p['position_z']:+.1f})"
            )
        if typical is not None and enough and (p["agreement_with_consensus"] or 1) <= typical - 0.1:
            reasons.append(
                f"agrees with the consensus {p['agreement_with_consensus']:.2f}, the median annotator {typical:.2f}"
            )
        if p["gold_tasks"] >= 5 and (p["gold_agreement"] or 0) < LOW_GOLD:
            reasons.append(f"gold agreement {p['gold_agreement']:.2f} over {p['gold_tasks']} gold tasks")
        if p["median_seconds"] is not None and p["median_seconds"] < FAST_S and p["role"] != Role.SIMULATED:
            reasons.append(f"a median of {p['median_seconds']} s per task")
        if enough and (p["tie_rate"] or 0) > MANY_TIES:
            reasons.append(f"ties in {p['tie_rate']:.0%} of rankings")
        if reasons:
            out.append({"annotator": p["annotator"], "reasons": reasons})
    return out
